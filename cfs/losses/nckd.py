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
             teacher_global: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``(1/B) sum_i || normalize(g(h_i) - mu_G^T) - m_{y_i}^T ||^2``, over the ``rows`` (a
    boolean row mask; 0 when none) when given: a weighted mean, since selecting rows by a mask
    waits for the device."""
    z = F.normalize(student.float() - teacher_global.detach().float(), dim=1)
    per_row = (z - teacher_dirs.detach().float()[y]).pow(2).sum(1)
    if rows is None:
        return per_row.mean()
    w = rows.float()
    return (per_row * w).sum() / w.sum().clamp(min=1)


def class_means(features: torch.Tensor, y: torch.Tensor,
                n_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C, D) class means of ``features`` (zero rows for absent classes), the global mean and
    the (C,) mask of classes present."""
    f = features.float()
    counts = torch.zeros(n_classes, device=f.device).index_add_(0, y, torch.ones_like(y, dtype=f.dtype))
    sums = torch.zeros(n_classes, f.shape[1], device=f.device).index_add(0, y, f)
    return sums / counts.clamp(min=1).unsqueeze(1), f.mean(0), counts > 0


def nc3_logits(features: torch.Tensor, class_dirs: torch.Tensor, scale: float = 16.0) -> torch.Tensor:
    """NCKD's post-hoc NC3 (self-duality) classifier: ``s * cos(g(h), m_c)`` with ``m_c`` the
    student's normalised centred class means (:func:`centred_directions`); nearest class
    centre by angle (NC4)."""
    return scale * F.normalize(features.float(), dim=1) @ class_dirs.float().T


def etf_gram(n: int, device: torch.device | None = None) -> torch.Tensor:
    """The Gram matrix of a simplex ETF: ``(C/(C-1)) (I - 11^T/C)`` (unit diagonal)."""
    eye = torch.eye(n, device=device)
    return n / max(n - 1, 1) * (eye - torch.full((n, n), 1.0 / n, device=device))


def nc2_loss(student_dirs: torch.Tensor, teacher_dirs: torch.Tensor | None, target: str = "teacher",
             classes: torch.Tensor | None = None) -> torch.Tensor:
    """``(1/C^2) || M_S M_S^T - G ||_F^2`` with ``G`` the teacher's Gram or the ideal ETF's; over
    the ``classes`` of a boolean (C,) mask when given (the other Gram entries masked out, nothing
    selected, so nothing is read back from the device; ``C`` is then the count of classes)."""
    s = student_dirs.float()
    n = s.new_tensor(float(s.shape[0])) if classes is None else classes.sum().float()
    if target == "teacher":
        t = teacher_dirs.detach().float()
        goal = t @ t.T
    elif target == "etf":  # etf_gram over the n classes: (n/(n-1)) (I - 11^T/n)
        goal = n / (n - 1).clamp(min=1) * (torch.eye(s.shape[0], device=s.device) - 1.0 / n.clamp(min=1))
    else:
        raise ValueError(f"unknown NC2 target {target!r} (use 'teacher' or 'etf')")
    diff = (s @ s.T - goal).pow(2)
    if classes is not None:
        diff = diff * (classes.unsqueeze(0) & classes.unsqueeze(1)).float()
    return diff.sum() / (n * n).clamp(min=1)


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
        #: whether a batch with rows has set ``global_mean`` yet (a tensor: no device read)
        self.has_global: torch.Tensor | None = None

    def update(self, z: torch.Tensor, y: torch.Tensor,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold a batch in (only the ``rows``, a boolean row mask, when given; a batch without
        any such row changes nothing); return (means with the batch's gradient, global mean).
        Rows are weighted, never selected, so nothing is read back from the device."""
        m = self.momentum
        n = self.means.shape[0]
        w = torch.ones(z.shape[0], device=z.device, dtype=z.dtype) if rows is None else rows.to(z.dtype)
        counts = torch.zeros(n, device=z.device, dtype=z.dtype).index_add_(0, y, w)
        sums = torch.zeros(n, z.shape[1], device=z.device, dtype=z.dtype).index_add(0, y, z * w.unsqueeze(1))
        present = counts > 0
        batch_means = sums / counts.clamp(min=1).unsqueeze(1)
        old = self.means.to(z.dtype)
        blended = torch.where(self.seen.unsqueeze(1), m * old + (1 - m) * batch_means, batch_means)
        means = torch.where(present.unsqueeze(1), blended, old)
        n_rows = w.sum()
        g = (z * w.unsqueeze(1)).sum(0) / n_rows.clamp(min=1)
        if self.global_mean is None:
            before, had = torch.zeros_like(g), torch.zeros((), dtype=torch.bool, device=z.device)
        else:
            before, had = self.global_mean.to(z.dtype), self.has_global.to(z.device)
        came = n_rows > 0  # the global mean starts at the first batch with rows, as the class means
        glob = torch.where(came, torch.where(had, m * before + (1 - m) * g, g), before)
        self.means = means.detach()
        self.seen = self.seen | present
        self.global_mean, self.has_global = glob.detach(), had | came
        return means, glob

    def to(self, device: torch.device) -> ClassMeanEMA:
        self.means, self.seen = self.means.to(device), self.seen.to(device)
        self.global_mean = None if self.global_mean is None else self.global_mean.to(device)
        self.has_global = None if self.has_global is None else self.has_global.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        glob = None if self.global_mean is None else self.global_mean.cpu()
        has = None if self.has_global is None else self.has_global.cpu()
        return {"momentum": self.momentum, "means": self.means.cpu(), "seen": self.seen.cpu(), "global_mean": glob,
                "has_global": has}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ClassMeanEMA:
        ema = cls(*state["means"].shape, momentum=state["momentum"])
        ema.means, ema.seen, ema.global_mean = state["means"], state["seen"], state["global_mean"]
        if ema.global_mean is not None:  # checkpoints from before the flag had a global mean set
            ema.has_global = state.get("has_global")
            ema.has_global = torch.tensor(True) if ema.has_global is None else ema.has_global
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
    # rows and classes are masked, never selected: nothing is read back from the device
    loss = loss + lam1 * nc1_loss(z, y, teacher_dirs, teacher_global, rows=known)
    means, glob = ema.update(z.float(), y, rows=known)
    cls = ema.seen & teacher_present
    on = known.any() & (cls.sum() > 1)  # a known row in this batch, and two classes for a Gram
    nc2 = nc2_loss(centred_directions(means, glob), teacher_dirs, target, classes=cls)
    return loss + lam2 * torch.where(on, nc2, torch.zeros((), device=z.device))
