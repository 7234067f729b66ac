"""The model a run trains: a backbone followed by a growing head."""

from __future__ import annotations

import torch
from torch import nn


class ContinualModel(nn.Module):
    """``head(backbone(x))``; ``features`` and ``tokens`` expose what regularizers need."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.tokens(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and logits in one pass (the engine stores both for the hooks)."""
        f = self.backbone(x)
        return f, self.head(f)
