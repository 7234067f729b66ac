"""Classifier heads that grow as classes arrive.

A class-incremental model is single-headed over all classes seen so far: when an experience
brings new classes, :meth:`expand` adds rows and keeps the old ones untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IncrementalLinear(nn.Module):
    """A linear layer whose number of outputs grows; old rows are copied on growth."""

    def __init__(self, in_features: int, out_features: int = 0) -> None:
        super().__init__()
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        if out_features:
            nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def expand(self, n_new: int) -> None:
        """Add ``n_new`` freshly initialised outputs (PyTorch's nn.Linear init)."""
        if n_new <= 0:
            return
        fresh = nn.Linear(self.in_features, n_new).to(self.weight.device, self.weight.dtype)
        self.weight = nn.Parameter(torch.cat([self.weight.data, fresh.weight.data]))
        self.bias = nn.Parameter(torch.cat([self.bias.data, fresh.bias.data]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class CosineHead(IncrementalLinear):
    """``s * cos(x, w_c)``: scale-free logits used by TEEN, PODNet-style and prototype methods.

    ``scale`` is fixed (``learn_scale=False``, TEEN's temperature 16) or learned.
    """

    def __init__(self, in_features: int, out_features: int = 0, scale: float = 16.0, learn_scale: bool = False) -> None:
        super().__init__(in_features, out_features)
        self.bias = None  # type: ignore[assignment]
        s = torch.tensor(float(scale))
        self.scale = nn.Parameter(s) if learn_scale else nn.Parameter(s, requires_grad=False)

    def expand(self, n_new: int) -> None:
        if n_new <= 0:
            return
        fresh = torch.empty(n_new, self.in_features, device=self.weight.device, dtype=self.weight.dtype)
        nn.init.kaiming_uniform_(fresh, a=5**0.5)
        self.weight = nn.Parameter(torch.cat([self.weight.data, fresh]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


HEADS = {"linear": IncrementalLinear, "cosine": CosineHead}
