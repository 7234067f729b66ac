"""Adapters for frozen pre-trained backbones and a small trainer over cached features.

(In-block adapters, SSF and BatchNorm re-estimation, which change the backbone itself, are in
:mod:`cfs.models.peft`; APER uses them for CNNs and ViTs.)

APER and NCPTM-CIL train an AdaptFormer-style bottleneck adapter (down 64, ReLU, up, scale
0.1, residual) on the first task only. Inside a ViT block it needs images every epoch; placed
on the backbone's pooled features (the default for any backbone here, and the only place a
CNN such as EfficientNet-Lite offers without surgery) it trains on cached features, which is
what makes those methods cheap on CPU. The trainer below runs such feature-level training:
SGD with momentum, weight decay and a cosine schedule, shuffled mini-batches of features.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from cfs.models.peft import Bottleneck


class FeatureAdapter(Bottleneck):
    """``f + scale * up(relu(down(f)))``: AdaptFormer's parallel bottleneck on features.

    ``up`` starts at zero (as AdaptFormer initialises it), so an untrained adapter is the
    identity and training starts from the pre-trained representation. The bottleneck is
    :class:`cfs.models.peft.Bottleneck` without dropout (parameter names ``down``/``up``)."""

    def __init__(self, dim: int, bottleneck: int = 64, scale: float = 0.1) -> None:
        super().__init__(dim, bottleneck, scale, dropout=0.0)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f + super().forward(f)


def train_on_features(params: Iterable[nn.Parameter], loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      features: torch.Tensor, labels: torch.Tensor, *, epochs: int, lr: float,
                      batch_size: int, momentum: float = 0.9, weight_decay: float = 5e-4,
                      generator: torch.Generator | None = None) -> list[float]:
    """Minimise ``loss_fn(feature_batch, label_batch)`` over shuffled batches of cached features.

    Returns the mean loss of every epoch (for logs and tests)."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1), eta_min=0.0)
    n, history = len(labels), []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(features.device)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = loss_fn(features[idx], labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        history.append(total / max(n, 1))
    return history
