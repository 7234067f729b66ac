"""Batch-statistics normalisation written with plain tensor ops, for meta-learning under vmap.

MAML-family methods use BatchNorm in transductive mode (the statistics of the current batch,
in training and at test time). PyTorch's fused batch-norm kernel gives WRONG second-order
gradients when its double backward runs under ``torch.func.vmap`` (the batching rule of
``batch_norm_backward`` is incorrect for ``grad_input``: pytorch/functorch#534; we measured
errors of 1e-2 against learn2learn's loop). The same normalisation decomposed into mean, var
and arithmetic differentiates correctly to any order under every transform, so MAML swaps its
model's BatchNorm layers for :class:`BatchStatNorm` (same parameter names, no buffers).
Outside torch.func transforms (a per-task loop on plain autograd) it calls the fused kernel,
which is exact there and several times cheaper than the decomposition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _functorch_wrapped(*tensors: torch.Tensor | None) -> bool:
    """Whether any input is being transformed by torch.func (vmap / grad): then the fused
    kernel's batching rule would give wrong second-order gradients."""
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    if wrapped is None:  # unknown torch internals: always take the decomposed (safe) path
        return True
    return any(t is not None and wrapped(t) for t in tensors)


class BatchStatNorm(nn.Module):
    """y = (x - mean_b(x)) / sqrt(var_b(x) + eps) * weight + bias over every dim but dim 1.

    Numerically ``F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)``."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> "BatchStatNorm":
        new = cls(bn.num_features, bn.eps, bn.affine).to(device=bn.weight.device if bn.affine else None)
        if bn.affine:
            new.weight, new.bias = bn.weight, bn.bias  # the same Parameter objects
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _functorch_wrapped(x, self.weight):
            # plain autograd (a per-task loop): the fused kernel is exact to any order and fastest
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = x - x.mean(dims, keepdim=True)
        scale = torch.rsqrt((centred * centred).mean(dims, keepdim=True) + self.eps)
        if self.weight is None:
            return centred * scale
        # fold the affine weight into the (C-sized) scale: one full-size multiply-add, not three
        return torch.addcmul(self.bias.view(shape), centred, scale * self.weight.view(shape))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}"


def use_batch_statistics(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``model`` by a :class:`BatchStatNorm`, in place.

    This is MAML's transductive BN (batch statistics also at test time, no running buffers);
    it keeps the affine parameters (and their names), drops the running statistics, and lets
    ``vmap`` run the tasks of a meta-batch side by side with exact second-order gradients.
    A model that already uses batch statistics (``conv4-tbn``) computes the same numbers."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, BatchStatNorm.from_batchnorm(child))
        else:
            use_batch_statistics(child)
    return model
