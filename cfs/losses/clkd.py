"""CLKD (Zhang et al. 2022, METHODS.md 4): instance-, class- and correlation-level logit losses.

The instance loss compares each sample's L2-normalised logit vector, the class loss each
class's L2-normalised response over the batch; the correlation loss compares the C x C
covariance of the logits across the batch (``variant="class"``, the documented default) or
the B x B variant of the third-party reimplementation (``variant="batch"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_correlation(z: torch.Tensor, variant: str = "class", pearson: bool = False) -> torch.Tensor:
    """``G = (z - mean)^T (z - mean) / (B - 1)`` (C x C) or the B x B form over classes;
    ``pearson`` divides by the standard deviations (a correlation matrix, entries in [-1, 1])."""
    if variant == "class":
        c = z - z.mean(0, keepdim=True)
        g = c.T @ c / max(z.shape[0] - 1, 1)
    elif variant == "batch":
        c = z - z.mean(1, keepdim=True)
        g = c @ c.T / max(z.shape[1] - 1, 1)
    else:
        raise ValueError(f"unknown correlation variant {variant!r} (use 'class' or 'batch')")
    if pearson:
        sd = g.diagonal().clamp(min=1e-12).sqrt()
        g = g / (sd.unsqueeze(0) * sd.unsqueeze(1))
    return g


def clkd_loss(student: torch.Tensor, teacher: torch.Tensor, mu: float = 0.5, beta: float = 2.0,
              nu: float = 0.4, variant: str = "class", pearson: bool = False) -> torch.Tensor:
    """``mu (L_ins + beta L_cls) + nu L_cc``; the CE term is the caller's (weight lambda_CE).

    ``pearson=True`` compares correlation instead of covariance matrices: bounded, where the
    covariance of raw logits grows with their square and can diverge."""
    s, t = student.float(), teacher.detach().float()
    l_ins = F.mse_loss(F.normalize(s, dim=1), F.normalize(t, dim=1))
    l_cls = F.mse_loss(F.normalize(s, dim=0), F.normalize(t, dim=0))
    n = s.shape[1]
    l_cc = (class_correlation(s, variant, pearson) - class_correlation(t, variant, pearson)).pow(2).sum() / (n * n)
    return mu * (l_ins + beta * l_cls) + nu * l_cc
