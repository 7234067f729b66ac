"""CLKD (Zhang et al. 2022, METHODS.md 4): instance-, class- and correlation-level logit losses.

The instance loss compares each sample's L2-normalised logit vector, the class loss each
class's L2-normalised response over the batch; the correlation loss compares the C x C
covariance of the logits across the batch (``variant="class"``, the documented default) or
the B x B variant of the third-party reimplementation (``variant="batch"``).

How the two matrices are compared (``form``):

- ``"squared-covariance"``: METHODS.md 4.2's equation, ``(1/C^2) ||G^S - G^T||_F^2`` on
  covariance matrices. Raw logits' covariance grows with their square and this term with its
  square again: it diverged (NaN) in cfs's continual runs.
- ``"covariance"``: the stable covariance form, the Frobenius norm not squared,
  ``(1/C) ||G^S - G^T||_F`` (the root mean square of the entry differences): its gradient with
  respect to the matrices has norm 1/C whatever their scale, where the squared form's grows
  with the difference. Zero for equal matrices (issue 11's "non-squared norm" variant; not
  from the paper or the reimplementation).
- ``"pearson"``: ``(1/C^2) ||R^S - R^T||_F^2`` on Pearson correlation matrices (entries in
  [-1, 1]), bounded.
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


#: the ways :func:`clkd_loss` compares the correlation matrices (module docstring)
CLKD_FORMS = ("pearson", "covariance", "squared-covariance")


def correlation_distance(s: torch.Tensor, t: torch.Tensor, variant: str = "class",
                         form: str = "squared-covariance") -> torch.Tensor:
    """``L_cc`` between student logits ``s`` and teacher logits ``t`` (B, C) in ``form``;
    the normaliser is the number of logit columns C, as in METHODS.md 4.2."""
    if form not in CLKD_FORMS:
        raise ValueError(f"unknown CLKD form {form!r} (use one of {', '.join(CLKD_FORMS)})")
    n = s.shape[1]
    diff = class_correlation(s, variant, form == "pearson") - class_correlation(t, variant, form == "pearson")
    if form == "covariance":
        return torch.linalg.vector_norm(diff) / n
    return diff.pow(2).sum() / (n * n)


def clkd_loss(student: torch.Tensor, teacher: torch.Tensor, mu: float = 0.5, beta: float = 2.0,
              nu: float = 0.4, variant: str = "class", form: str = "squared-covariance") -> torch.Tensor:
    """``mu (L_ins + beta L_cls) + nu L_cc``; the CE term is the caller's (weight lambda_CE).

    ``form`` chooses ``L_cc`` (module docstring): METHODS.md's squared covariance distance
    (the default of this function), its stable non-squared variant ``"covariance"``, or
    ``"pearson"`` correlation matrices (the default of the clkd strategy and of ``cfs distill``)."""
    s, t = student.float(), teacher.detach().float()
    l_ins = F.mse_loss(F.normalize(s, dim=1), F.normalize(t, dim=1))
    l_cls = F.mse_loss(F.normalize(s, dim=0), F.normalize(t, dim=0))
    return mu * (l_ins + beta * l_cls) + nu * correlation_distance(s, t, variant, form)
