"""CLKD (Zhang, Liu, Hopcroft, He 2022; METHODS.md 4) as a continual regularizer.

``lam * [mu (L_ins + beta L_cls) + nu L_cc]`` between the previous model's old-class logits
and the student's, on the current batch (defaults of the mdistiller-style reimplementation:
mu 0.5, beta 2; ``variant="batch"`` for its B x B correlation). The per-element MSE of
unit vectors is small, and the covariance of raw logits grows with their square: it diverged
(NaN) on split-digits at lr 0.05 even at nu = 0.01 once replayed old samples joined the batch.
So this plugin compares Pearson correlation matrices by default (``form=pearson``, bounded) at
the reimplementation's nu = 0.4. ``-o clkd.form=covariance`` compares covariance matrices by
the Frobenius norm not squared, ``(1/C) ||G^S - G^T||_F`` (stable: its gradient does not grow
with the covariances; issue 11's variant, not the paper's); ``-o clkd.form=squared-covariance``
is METHODS.md 4.2's literal ``(1/C^2) ||G^S - G^T||_F^2`` (the one that diverged).
(``-o clkd.pearson=...`` of earlier versions is now ``clkd.form``.)

``new_class_ce`` (default, LwF's protocol): once a teacher exists, a new-class sample's CE
sees only the new-class logits, so the distillation term alone speaks for the old classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.losses import clkd_loss
from cfs.losses.clkd import CLKD_FORMS
from cfs.registry import Registry
from cfs.teacher import TeacherOptions, TeacherStrategy


@dataclass
class CLKDOptions(TeacherOptions):
    lam: float = 1.0
    mu: float = 0.5
    beta: float = 2.0
    nu: float = 0.4
    #: how the class-correlation matrices are compared: pearson, covariance, squared-covariance
    form: str = "pearson"
    variant: str = "class"
    new_class_ce: bool = True

    def __post_init__(self) -> None:
        if self.form not in CLKD_FORMS:
            raise ValueError(f"unknown clkd.form {self.form!r}: use one of {', '.join(CLKD_FORMS)}")
        if self.variant not in ("class", "batch"):
            raise ValueError(f"unknown clkd.variant {self.variant!r}: use class or batch")


class CLKD(TeacherStrategy):
    """Class-aware logit distillation (instance, class and class-correlation terms)."""

    name = "clkd"
    compatibility = frozenset({"class-incremental"})
    Options = CLKDOptions

    @hookimpl
    def cfs_loss(self, state: RunState) -> torch.Tensor | None:
        if self.active_teacher(state) is None:
            return None
        o = self.options
        _, old = self.teacher_outputs(state)
        return o.lam * clkd_loss(state.outputs[:, : self.teacher.n_classes], old, o.mu, o.beta, o.nu, o.variant,
                                 o.form)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(CLKD)
