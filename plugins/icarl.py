"""iCaRL (Rebuffi et al., CVPR 2017; METHODS.md 11.3), PyCIL's form.

* Herding exemplar memory, total budget 2000 (``budget // n_seen`` per class, old classes
  shrink by keeping the first of their herding order).
* Training on new data plus exemplars: CE over all seen classes plus ``lam`` times the soft
  cross-entropy between the previous model's old-class logits and the student's (T = 2).
  (The original paper used sigmoid BCE with the old model's outputs as targets.)
* Nearest-mean-of-exemplars prediction: class means of the L2-normalised exemplar features,
  re-normalised; ``score_c = -|| normalize(phi(x)) - mu_c ||^2``. ``nme=False`` keeps the
  linear head's logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.losses import soft_cross_entropy
from cfs.memory import ClassBalancedMemory, embed_raw, store_experience
from cfs.registry import Registry
from cfs.teacher import TeacherOptions, TeacherStrategy


@dataclass
class ICaRLOptions(TeacherOptions):
    budget: int = 2000
    per_class: int | None = None
    T: float = 2.0
    lam: float = 1.0
    nme: bool = True


class ICaRL(TeacherStrategy):
    """iCaRL: herding exemplars, distillation of old logits, nearest-mean-of-exemplars."""

    name = "icarl"
    compatibility = frozenset({"class-incremental"})
    Options = ICaRLOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.memory = ClassBalancedMemory(self.options.budget, self.options.per_class, "herding")
        self.means: torch.Tensor | None = None

    @hookimpl
    def cfs_before_training_exp(self, state: RunState) -> None:
        state.join_train_data(self.memory.dataset())

    @hookimpl
    def cfs_loss(self, state: RunState) -> torch.Tensor | None:
        pair = self.old_class_logits(state)
        return None if pair is None else self.options.lam * soft_cross_entropy(*pair, self.options.T)

    @hookimpl
    def cfs_after_training_exp(self, state: RunState) -> None:
        store_experience(self.memory, state)
        self.means = self.class_means(state)
        self.take_snapshot(state)

    def class_means(self, state: RunState) -> torch.Tensor:
        """(n_seen, D) re-normalised means of the normalised exemplar features."""
        means = []
        for c in range(state.n_seen):
            x, _ = self.memory.store[c]
            means.append(F.normalize(F.normalize(embed_raw(state, x), dim=1).mean(0), dim=0))
        return torch.stack(means)

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor | None:
        if not self.options.nme or self.means is None:
            return None
        f = F.normalize(state.model.features(x).float(), dim=1)
        return -torch.cdist(f, self.means.to(f.device)).pow(2)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory": self.memory.state_dict(),
                "means": None if self.means is None else self.means.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory.load_state_dict(state["memory"])
        self.means = state["means"]


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(ICaRL)
