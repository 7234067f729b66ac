"""PCKD (Ding et al., TCSVT 2025; official code MuHeDing/PCKD; METHODS.md 7) as a continual
regularizer.

Teacher = previous model, category centres = the heads' rows (the student's first ``n_old``
rows, so both centre sets cover the teacher's classes). Each batch yields ``views`` views
(rotations by 0/90/180/270 degrees, [PROPOSED]); the engine's CE stays on view 0. Loss:
``delta mean_i w_i KL_i + beta mean_{i,views} w_i L_con,i + alpha L_W + phi L_align`` with
``w`` the preview weights (``t_e = 1.005^epoch``), KL the per-sample T^2-scaled KD on view 0,
L_con the category contrast of ``u = W^S E_s(f)`` and ``v = W^T E_t(f)`` (tau 4, scale
tau/0.07), L_W the MSE between the old head rows and the teacher head, L_align the cosine
regression of an MLP projection (hidden 16 d_T) onto the teacher feature. Weights default to
METHODS.md's proposal (delta 1, alpha 1, phi 1) except beta 0.01: with the code's
tau/0.07 scale the contrast at beta 0.1 outweighed the CE ~40:1 and the student stopped
learning new classes on split-digits (``-o pckd.beta=0.1`` restores it); ``detach_weights=False`` keeps the
gradient through ``w`` in the KD term as the official code does.

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
from cfs.losses import PCKDHeads, pckd_loss, rotated_views, view_features
from cfs.registry import Registry
from cfs.teacher import TeacherOptions, TeacherStrategy


@dataclass
class PCKDOptions(TeacherOptions):
    delta: float = 1.0
    beta: float = 0.01
    alpha: float = 1.0
    phi: float = 1.0
    T: float = 4.0
    tau: float = 4.0
    base_tau: float = 0.07
    views: int = 4
    detach_weights: bool = True
    new_class_ce: bool = True


class PCKD(TeacherStrategy):
    """Preview-based category contrastive distillation from the previous model."""

    name = "pckd"
    compatibility = frozenset({"class-incremental"})
    Options = PCKDOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.heads: PCKDHeads | None = None

    @hookimpl
    def cfs_before_training_exp(self, state: RunState) -> None:
        if self.heads is None and self.active_teacher(state) is not None:
            d = state.model.backbone.out_dim
            self.heads = PCKDHeads(d, d)
        if self.heads is not None:
            self.heads.to(state.device)

    @hookimpl
    def cfs_extra_parameters(self, state: RunState) -> list[nn.Parameter] | None:
        return list(self.heads.parameters()) if self.heads is not None else None

    @hookimpl
    def cfs_loss(self, state: RunState) -> torch.Tensor | None:
        teacher = self.active_teacher(state)
        if teacher is None or self.heads is None:
            return None
        o, (x, y) = self.options, state.batch
        f_s = view_features(state.model, x, state.features, o.views)
        f_t, z_t = self.teacher.forward_all(rotated_views(x, o.views))
        return pckd_loss(self.heads, f_s, state.outputs, y, f_t, z_t, state.model.head, teacher.head,
                         self.teacher.n_classes, state.epoch + 1, delta=o.delta, beta=o.beta, alpha=o.alpha, phi=o.phi,
                         T=o.T, tau=o.tau, base_tau=o.base_tau, detach_weights=o.detach_weights)

    def state_dict(self) -> dict[str, Any]:
        heads = None if self.heads is None else {k: v.cpu() for k, v in self.heads.state_dict().items()}
        return {**super().state_dict(), "heads": heads}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("heads") is not None:
            w = state["heads"]
            d_s = w["embed_s.weight"].shape[1]
            self.heads = PCKDHeads(d_s, w["embed_t.weight"].shape[0])
            self.heads.load_state_dict(w)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(PCKD)
