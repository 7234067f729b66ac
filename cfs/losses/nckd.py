"""NCKD (Zhang, Song, He; AAAI 2025; METHODS.md 5): transfer the teacher's neural-collapse
geometry. NC1 pulls each projected student feature towards the teacher's centred class
direction; NC2 matches the cosine Gram matrix of centred class means (the teacher's, or the
ideal simplex ETF with ``target="etf"``). The formulas are METHODS.md's [PROPOSED] reading;
the paper's own equations were not available.

:func:`nckd_loss` combines KD, NC1 and NC2 for one batch; the ``nckd`` strategy and
``cfs distill --loss nckd`` both call it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cfs.losses.kd import kd_loss


def centred_directions(means: torch.Tensor, global_mean: torch.Tensor) -> torch.Tensor:
    """Rows ``normalize(mu_c - mu_G)`` of the (C, D) class means."""
    return F.normalize(means - global_mean.unsqueeze(0), dim=1)


def nc1_loss(student: torch.Tensor, y: torch.Tensor, teacher_dirs: torch.Tensor,
             teacher_global: torch.Tensor) -> torch.Tensor:
    """``(1/B) sum_i || normalize(g(h_i) - mu_G^T) - m_{y_i}^T ||^2``."""
    z = F.normalize(student.float() - teacher_global.detach().float(), dim=1)
    return (z - teacher_dirs.detach().float()[y]).pow(2).sum(1).mean()


def class_means(features: torch.Tensor, y: torch.Tensor,
                n_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C, D) class means of ``features`` (zero rows for absent classes), the global mean and
    the (C,) mask of classes present."""
    f = features.float()
    counts = torch.bincount(y, minlength=n_classes)
    sums = torch.zeros(n_classes, f.shape[1], device=f.device).index_add(0, y, f)
    return sums / counts.clamp(min=1).unsqueeze(1).float(), f.mean(0), counts > 0


def nc3_logits(features: torch.Tensor, class_dirs: torch.Tensor, scale: float = 16.0) -> torch.Tensor:
    """NCKD's post-hoc NC3 (self-duality) classifier: ``s * cos(g(h), m_c)`` with ``m_c`` the
    student's normalised centred class means (:func:`centred_directions`); nearest class
    centre by angle (NC4)."""
    return scale * F.normalize(features.float(), dim=1) @ class_dirs.float().T


def etf_gram(n: int, device: torch.device | None = None) -> torch.Tensor:
    """The Gram matrix of a simplex ETF: ``(C/(C-1)) (I - 11^T/C)`` (unit diagonal)."""
    eye = torch.eye(n, device=device)
    return n / max(n - 1, 1) * (eye - torch.full((n, n), 1.0 / n, device=device))


def nc2_loss(student_dirs: torch.Tensor, teacher_dirs: torch.Tensor | None, target: str = "teacher") -> torch.Tensor:
    """``(1/C^2) || M_S M_S^T - G ||_F^2`` with ``G`` the teacher's Gram or the ideal ETF's."""
    s = student_dirs.float()
    n = s.shape[0]
    if target == "teacher":
        t = teacher_dirs.detach().float()
        goal = t @ t.T
    elif target == "etf":
        goal = etf_gram(n, s.device)
    else:
        raise ValueError(f"unknown NC2 target {target!r} (use 'teacher' or 'etf')")
    return (s @ s.T - goal).pow(2).sum() / (n * n)


class ClassMeanEMA:
    """Student class means tracked across batches: ``mu <- m mu (detached) + (1-m) batch mean``.

    The current batch's share keeps its gradient, so NC2 trains the student through it; a
    class met for the first time starts at its batch mean. The global mean is tracked the
    same way from the batch mean.
    """

    def __init__(self, n_classes: int, dim: int, momentum: float = 0.9, device: torch.device | None = None) -> None:
        self.momentum = momentum
        self.means = torch.zeros(n_classes, dim, device=device)
        self.seen = torch.zeros(n_classes, dtype=torch.bool, device=device)
        self.global_mean: torch.Tensor | None = None

    def update(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold a batch in; return (means with the batch's gradient, global mean)."""
        m = self.momentum
        n = self.means.shape[0]
        counts = torch.bincount(y, minlength=n).float()
        sums = torch.zeros(n, z.shape[1], device=z.device, dtype=z.dtype).index_add(0, y, z)
        present = counts > 0
        batch_means = sums / counts.clamp(min=1).unsqueeze(1)
        old = self.means.to(z.dtype)
        blended = torch.where(self.seen.unsqueeze(1), m * old + (1 - m) * batch_means, batch_means)
        means = torch.where(present.unsqueeze(1), blended, old)
        g = z.mean(0)
        glob = g if self.global_mean is None else m * self.global_mean.to(z.dtype) + (1 - m) * g
        self.means = means.detach()
        self.seen = self.seen | present
        self.global_mean = glob.detach()
        return means, glob

    def to(self, device: torch.device) -> ClassMeanEMA:
        self.means, self.seen = self.means.to(device), self.seen.to(device)
        self.global_mean = None if self.global_mean is None else self.global_mean.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        glob = None if self.global_mean is None else self.global_mean.cpu()
        return {"momentum": self.momentum, "means": self.means.cpu(), "seen": self.seen.cpu(), "global_mean": glob}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ClassMeanEMA:
        ema = cls(*state["means"].shape, momentum=state["momentum"])
        ema.means, ema.seen, ema.global_mean = state["means"], state["seen"], state["global_mean"]
        return ema


def nckd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, z: torch.Tensor, y: torch.Tensor,
              teacher_dirs: torch.Tensor, teacher_global: torch.Tensor, teacher_present: torch.Tensor,
              ema: ClassMeanEMA, *, kd: float = 1.0, lam1: float = 1.0, lam2: float = 1.0, T: float = 4.0,
              target: str = "teacher") -> torch.Tensor:
    """``kd KD_T + lam1 L_NC1 + lam2 L_NC2`` for one batch (METHODS.md 5).

    ``z`` are the projected student features, ``teacher_dirs``/``teacher_global``/``teacher_present``
    what :func:`class_means` and :func:`centred_directions` gave for the teacher's features.
    NC1 and the student means (``ema``, updated here) use only samples of classes the teacher
    has a mean for; NC2 needs at least two such classes seen by the student.
    """
    loss = kd * kd_loss(student_logits, teacher_logits, T)
    known = teacher_present[y]
    if known.any():
        loss = loss + lam1 * nc1_loss(z[known], y[known], teacher_dirs, teacher_global)
        means, glob = ema.update(z[known].float(), y[known])
        cls = ema.seen & teacher_present
        if int(cls.sum()) > 1:
            loss = loss + lam2 * nc2_loss(centred_directions(means[cls], glob), teacher_dirs[cls], target)
    return loss
