"""Batch transforms that run on the run's device, on whole mini-batches at once.

torchvision's v2 transforms draw one random parameter set per call, so applied to a batch
they crop and flip every image the same way; per-image randomness with per-image PIL/tensor
calls costs a Python round trip per image. These few vectorised ops (the CIFAR recipe of
PyCIL: random crop with padding, horizontal flip, brightness jitter) keep augmentation
per-image and still one kernel per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class BatchTransform:
    """Scale uint8 images to [0, 1], augment (training only), normalise, optionally resize."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False
    brightness: float = 0.0
    resize: int | None = None

    def __post_init__(self) -> None:
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._stats:
            m = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            s = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
            self._stats[device] = (m, s)
        return self._stats[device]

    @property
    def augments(self) -> bool:
        return bool(self.crop_padding or self.flip or self.brightness)

    def __call__(self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if train and self.augments:
            x = self._augment(x, generator)
        mean, std = self._mean_std(x.device)
        x = (x - mean) / std
        if self.resize and x.shape[-1] != self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return x

    def _augment(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = x.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g, device=g.device if g is not None else dev).to(dev)

        if self.crop_padding:
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p))
            dy = (rand(b) * (2 * p + 1)).long()
            dx = (rand(b) * (2 * p + 1)).long()
            rows = (dy.view(b, 1) + torch.arange(h, device=dev)).view(b, 1, h, 1).expand(b, x.shape[1], h, w + 2 * p)
            padded = padded.gather(2, rows)
            cols = (dx.view(b, 1) + torch.arange(w, device=dev)).view(b, 1, 1, w).expand(b, x.shape[1], h, w)
            x = padded.gather(3, cols)
        if self.flip:
            flip = rand(b) < 0.5
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
        if self.brightness:
            factor = 1 + (rand(b) * 2 - 1) * self.brightness
            x = (x * factor.view(b, 1, 1, 1)).clamp_(0, 1)
        return x
