"""TEEN (Wang, Zhou, Zhang, Zhan, Ye; NeurIPS 2023, "Few-shot class-incremental learning via
training-free prototype calibration"), METHODS.md §8.

[CODE, wangkiw/TEEN] Base session as the prototype baseline (cosine classifier trained with CE
on the base classes, then replaced by unnormalised class means). In every incremental session
each new class's prototype is calibrated towards the base prototypes it resembles:

    p^_c = normalize(p_c),  b^_j = normalize(b_j)              (base classes only)
    w_cj = softmax_j(tau * b^_j . p^_c)                         (tau = softmax_t = 16)
    Delta_c = normalize(sum_j w_cj b^_j)
    p~_c = (1 - alpha) p^_c + alpha Delta_c                     (alpha = shift_weight)

Base prototypes never change; earlier novel classes keep their calibrated prototypes.
Defaults: alpha 0.1, the official CIFAR-100 script's ``-shift_weight 0.1`` (wangkiw/TEEN
``scripts/cifar.sh``; METHODS.md 8.3's table); the code's argparse default 0.5 is what its
miniImageNet and CUB-200 runs use (``-o teen.alpha=0.5`` for those). tau 16 (``-softmax_t 16``),
scale 16 (``-temperature 16``, CIFAR; 32 for miniImageNet/CUB-200). Prediction: scale *
cosine over all seen classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.prototype_strategy import SessionPrototypeStrategy
from cfs.registry import Registry


def calibrate_prototypes(new: torch.Tensor, base: torch.Tensor, alpha: float, tau: float) -> torch.Tensor:
    """TEEN's calibration of raw novel prototypes ``new`` (C, D) with raw base prototypes
    ``base`` (B, D); returns (C, D)."""
    p = F.normalize(new, dim=1)
    b = F.normalize(base, dim=1)
    w = torch.softmax(tau * p @ b.T, dim=1)
    shift = F.normalize(w @ b, dim=1)
    return (1 - alpha) * p + alpha * shift


@dataclass
class TeenOptions:
    #: weight of the base-derived shift (the code's ``shift_weight``); 0.1 as the CIFAR-100 script
    alpha: float = 0.1
    tau: float = 16.0
    scale: float = 16.0


class Teen(SessionPrototypeStrategy):
    """TEEN: training-free calibration of novel prototypes towards similar base prototypes."""

    name = "teen"
    Options = TeenOptions

    def session_prototypes(self, new: torch.Tensor) -> torch.Tensor:
        base = self.bank.prototypes[: self.n_base].to(new.device)
        return calibrate_prototypes(new, base, self.options.alpha, self.options.tau)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Teen)
