"""Knowledge distillation (Hinton et al. 2015) as a continual regularizer.

The previous model is the teacher: ``lam * T^2 KL(softmax(z_old/T) || softmax(z[:, :n_old]/T))``
on the current batch, over the classes the teacher knew. ``cfs distill --loss kd`` uses the
same function in the standalone teacher-student setting.

``new_class_ce`` (default, LwF's protocol): once a teacher exists, a new-class sample's CE
sees only the new-class logits, so the distillation term alone speaks for the old classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.losses import kd_loss
from cfs.registry import Registry
from cfs.teacher import TeacherOptions, TeacherStrategy


@dataclass
class KDOptions(TeacherOptions):
    lam: float = 1.0
    T: float = 2.0
    new_class_ce: bool = True


class KD(TeacherStrategy):
    """Vanilla logit distillation from the previous model (T=2)."""

    name = "kd"
    compatibility = frozenset({"class-incremental"})
    Options = KDOptions

    @hookimpl
    def cfs_loss(self, state: RunState) -> torch.Tensor | None:
        pair = self.old_class_logits(state)
        return None if pair is None else self.options.lam * kd_loss(*pair, self.options.T)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(KD)
