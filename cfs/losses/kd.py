"""Logit distillation: Hinton's KD and the soft cross-entropy LwF and iCaRL use.

``soft_cross_entropy`` is PyCIL's ``_KD_loss`` (METHODS.md 11.1, 11.3):
``-sum softmax(z_t/T) * log_softmax(z_s/T)``, averaged over the batch, no ``T**2``.
``kd_loss`` is Hinton et al. (2015): ``T**2 * KL(softmax(z_t/T) || softmax(z_s/T))``, averaged
over the batch; the ``T**2`` keeps gradient magnitudes independent of the temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    """``-(1/B) sum_i sum_c softmax(t_i/T)_c log softmax(s_i/T)_c`` (LwF's KD_T)."""
    target = F.softmax(teacher.detach().float() / T, dim=1)
    return -(target * F.log_softmax(student.float() / T, dim=1)).sum(1).mean()


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, T: float = 4.0, reduction: str = "mean") -> torch.Tensor:
    """``T^2 KL(softmax(t/T) || softmax(s/T))`` per sample, averaged unless ``reduction="none"``."""
    log_t = F.log_softmax(teacher.detach().float() / T, dim=1)
    log_s = F.log_softmax(student.float() / T, dim=1)
    per_sample = (log_t.exp() * (log_t - log_s)).sum(1) * T * T
    return per_sample if reduction == "none" else per_sample.mean()


def new_class_cross_entropy(logits: torch.Tensor, y: torch.Tensor, n_old: int,
                            all_new: bool | None = None) -> torch.Tensor:
    """PyCIL's LwF/EWC cross-entropy: on a batch of new-class samples only, the CE over the
    new-class logits (``logits[:, n_old:]``), so old logits are left to the distillation term.
    A batch that holds old-class samples (a memory composed in, ``replay+lwf``) gets the CE over
    all seen classes: masking the old logits for its new samples only would bias every
    prediction towards the replayed old classes.

    ``all_new``: whether the caller knows every label is ``>= n_old`` (``None``: look at ``y``,
    which waits for the device)."""
    if all_new is None:
        all_new = not bool((y < n_old).any())
    if not all_new:
        return F.cross_entropy(logits, y)
    return F.cross_entropy(logits[:, n_old:], y - n_old)
