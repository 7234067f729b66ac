"""The prototype baseline of few-shot class-incremental learning (the "decoupled cosine"
baseline TEEN improves on; Wang et al., NeurIPS 2023, §3 and Table 1).

Base session: the engine trains backbone and cosine head with cross-entropy on the base
classes (use ``--head cosine``, the default of the ``fscil-*`` protocols). After it, every
base class's classifier becomes the mean embedding of its training images (test transform,
eval mode, unnormalised). Incremental sessions are training-free: the backbone is frozen and
each new class's prototype is the mean embedding of its few shots. Prediction is
``scale * cos(f(x), p_c)`` over all seen classes (``scale`` = the cosine head's, else 16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.features import cached_features, run_cache
from cfs.models.prototypes import PrototypeBank, class_means
from cfs.registry import Registry
from cfs.strategy import Strategy


@dataclass
class ProtoOptions:
    scale: float = 16.0


class ProtoFscil(Strategy):
    """FSCIL prototype baseline: base training, then class-mean prototypes of frozen features."""

    name = "protonet-fscil"
    compatibility = frozenset({"fscil"})
    Options = ProtoOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.bank = PrototypeBank()
        self.n_base = 0

    def session_prototypes(self, new: torch.Tensor) -> torch.Tensor:
        """Prototypes of a novel session's classes from their raw class means (here: as is)."""
        return new

    def _means(self, state: RunState) -> torch.Tensor:
        feats = cached_features(state, state.train_data.x)
        return class_means(feats, state.train_data.y.to(feats.device), state.experience.classes)

    @hookimpl
    def cfs_train_experience(self, state: RunState) -> bool | None:
        if state.is_first_experience:
            return None  # the base session is trained by the engine
        self.bank.set(state.experience.classes, self.session_prototypes(self._means(state)))
        return True

    @hookimpl
    def cfs_after_training_exp(self, state: RunState) -> None:
        if state.is_first_experience:
            self.n_base = len(state.experience.classes)
            self.bank.set(state.experience.classes, self._means(state))

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        scale = getattr(state.model.head, "scale", None)
        scale = float(scale) if scale is not None else self.options.scale
        return self.bank.scores(run_cache(state).prepared(state.model.backbone, x), scale)

    def state_dict(self) -> dict[str, Any]:
        return {**self.bank.state_dict(), "n_base": self.n_base}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bank.load_state_dict(state)
        self.n_base = state["n_base"]


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(ProtoFscil)
