"""Learning without Forgetting (Li & Hoiem, ECCV 2016; METHODS.md 11.1).

The model from before the current experience is the teacher. On the new data the loss is
``CE(new-class logits, y) + lam * KD_T(teacher old logits || student old logits)`` with KD_T
the soft cross-entropy at temperature ``T`` (PyCIL: T = 2, lam = 3). ``new_class_ce=False``
uses the cross-entropy over all seen classes instead of PyCIL's new-class-only one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.losses import soft_cross_entropy
from cfs.registry import Registry
from cfs.teacher import TeacherOptions, TeacherStrategy


@dataclass
class LwFOptions(TeacherOptions):
    lam: float = 3.0
    T: float = 2.0
    new_class_ce: bool = True


class LwF(TeacherStrategy):
    """Learning without Forgetting: distil the previous model's old-class outputs (T=2, lam=3)."""

    name = "lwf"
    compatibility = frozenset({"class-incremental"})
    Options = LwFOptions

    @hookimpl
    def cfs_loss(self, state: RunState) -> torch.Tensor | None:
        pair = self.old_class_logits(state)
        return None if pair is None else self.options.lam * soft_cross_entropy(*pair, self.options.T)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(LwF)
