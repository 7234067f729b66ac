"""NCKD (Zhang, Song, He; AAAI 2025; METHODS.md 5) as a continual regularizer.

Teacher = previous model. At the start of an experience the teacher's class means and global
mean of the penultimate features are computed once over the experience's training data (the
teacher is frozen). On each batch:
``kd * KD_T(old logits) + lam1 * L_NC1 + lam2 * L_NC2`` where NC1 pulls each student feature
(through the projector g) towards the teacher's centred class direction and NC2 matches the
Gram matrix of the centred class means (student means tracked by EMA, momentum 0.9) to the
teacher's (``target="etf"``: to the ideal simplex ETF). The student and teacher share an
architecture here, so g is the identity unless ``projector=True`` (linear + BN, trained with
the model). The paper's post-hoc NC3 head (cosine to the student's class means) is reported by
``cfs distill --loss nckd``, the paper's setting; a class-incremental run cannot recompute old
classes' means without their data, so it is not used here.

``new_class_ce`` (default, LwF's protocol): once a teacher exists, a new-class sample's CE
sees only the new-class logits, so the distillation term alone speaks for the old classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.losses import ClassMeanEMA, centred_directions, class_means, nckd_loss
from cfs.memory import embed_raw
from cfs.registry import Registry
from cfs.strategy import tensor_state
from cfs.teacher import TeacherOptions, TeacherStrategy


@dataclass
class NCKDOptions(TeacherOptions):
    lam1: float = 1.0
    lam2: float = 1.0
    kd: float = 1.0
    T: float = 4.0
    momentum: float = 0.9
    target: str = "teacher"
    projector: bool = False
    new_class_ce: bool = True


class NCKD(TeacherStrategy):
    """Neural-collapse distillation: NC1 prototype alignment and NC2 Gram transfer."""

    name = "nckd"
    compatibility = frozenset({"class-incremental"})
    Options = NCKDOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.projector: nn.Module | None = None
        self.t_dirs: torch.Tensor | None = None
        self.t_global: torch.Tensor | None = None
        self.t_present: torch.Tensor | None = None
        self.ema: ClassMeanEMA | None = None

    @hookimpl
    def cfs_before_training_exp(self, state: RunState) -> None:
        teacher = self.active_teacher(state)
        if teacher is None:
            return
        data = state.train_data
        feats = embed_raw(state, data.x, model=teacher)
        means, self.t_global, present = class_means(feats, data.y, state.n_seen)
        self.t_dirs = centred_directions(means, self.t_global)
        self.t_present = present
        self.ema = ClassMeanEMA(state.n_seen, feats.shape[1], self.options.momentum, state.device)
        if self.options.projector and self.projector is None:
            d = state.model.backbone.out_dim
            self.projector = nn.Sequential(nn.Linear(d, feats.shape[1]), nn.BatchNorm1d(feats.shape[1])).to(state.device)
            if getattr(self, "_projector_state", None):
                self.projector.load_state_dict(self._projector_state)

    @hookimpl
    def cfs_extra_parameters(self, state: RunState) -> list[nn.Parameter] | None:
        return list(self.projector.parameters()) if self.projector is not None else None

    @hookimpl
    def cfs_loss(self, state: RunState) -> torch.Tensor | None:
        if self.active_teacher(state) is None or self.t_dirs is None:
            return None
        o = self.options
        _, old = self.teacher_outputs(state)
        z = self.projector(state.features) if self.projector is not None else state.features
        return nckd_loss(state.outputs[:, : self.teacher.n_classes], old, z, state.batch[1], self.t_dirs, self.t_global,
                         self.t_present, self.ema, kd=o.kd, lam1=o.lam1, lam2=o.lam2, T=o.T, target=o.target)

    def state_dict(self) -> dict[str, Any]:
        """Teacher, projector, and the current experience's targets and student EMA (so a run
        resumed mid-experience regularises exactly as before)."""
        proj = None if self.projector is None else {k: v.cpu() for k, v in self.projector.state_dict().items()}
        return {**super().state_dict(), "projector": proj,
                **tensor_state(t_dirs=self.t_dirs, t_global=self.t_global, t_present=self.t_present),
                "ema": None if self.ema is None else self.ema.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._projector_state = state.get("projector")
        self.t_dirs, self.t_global, self.t_present = state.get("t_dirs"), state.get("t_global"), state.get("t_present")
        self.ema = ClassMeanEMA.from_state_dict(state["ema"]) if state.get("ema") else None

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        """Move restored per-experience tensors to the run's device."""
        dev = state.device
        for name in ("t_dirs", "t_global", "t_present"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.to(dev))
        if self.ema is not None:
            self.ema.to(dev)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(NCKD)
