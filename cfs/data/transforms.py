"""Batch transforms that run on the run's device, on whole mini-batches at once.

torchvision's v2 transforms draw one random parameter set per call, so applied to a batch
they crop and flip every image the same way; per-image randomness with per-image PIL/tensor
calls costs a Python round trip per image. These few vectorised ops (the CIFAR recipe of
PyCIL: random crop with padding, horizontal flip, brightness jitter) keep augmentation
per-image and still one kernel per batch.

Two more, for the official FSCIL base-session recipe (TEEN's CIFAR-100 data loader, wangkiw/TEEN
``dataloader/cifar100/cifar.py``: crop 32 pad 4, flip, AutoAugment CIFAR10 policy, to tensor,
Cutout 1 hole of 16, normalise), both off unless a protocol asks for them:

- ``autoaugment="cifar10"``: torchvision's ``v2.AutoAugment`` with the CIFAR10 policy (the 25
  sub-policies of Cubuk et al.) and fill 128 (the official code's ``fillcolor``), per image on
  uint8 pixels after crop, flip and brightness; one Python call per image (this recipe costs
  that), its random draws seeded from the run's generator;
- ``cutout=L``: DeVries & Taylor's Cutout, one L x L square (clipped at the border) around a
  uniformly drawn centre set to 0 before normalisation, vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from cfs.errors import CfsError

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
    #: AutoAugment policy: None (off) or "cifar10"
    autoaugment: str | None = None
    #: side of the Cutout square in pixels; 0 = off
    cutout: int = 0

    def __post_init__(self) -> None:
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.autoaugment not in (None, "cifar10"):
            raise CfsError(f"augment: unknown autoaugment policy {self.autoaugment!r} (use cifar10)")
        if self.cutout < 0:
            raise CfsError(f"augment: cutout must be >= 0 pixels, got {self.cutout}")
        self._autoaugment = None
        self._device_generators: dict[torch.device, torch.Generator] = {}

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._stats:
            m = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            s = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
            self._stats[device] = (m, s)
        return self._stats[device]

    @property
    def augments(self) -> bool:
        return bool(self.crop_padding or self.flip or self.brightness or self.autoaugment or self.cutout)

    def __call__(self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        if train and self.autoaugment and x.dtype != torch.uint8:
            raise CfsError(f"augment: autoaugment needs uint8 images; this data set holds {x.dtype} pixels")
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if train and self.augments:
            x = self._augment(x, generator)
        mean, std = self._mean_std(x.device)
        x = (x - mean) / std
        if self.resize and x.shape[-1] != self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return x

    def _on_device(self, g: torch.Generator | None, device: torch.device) -> torch.Generator | None:
        """The generator to draw this batch's random numbers from, on the batch's device.

        ``g`` itself when it lives there (the CPU: the draws are what they always were); else a
        generator on ``device`` reseeded from one draw of ``g`` per batch, so the numbers are
        made where they are used (no host-to-device copy per draw) and still follow ``g``: same
        seed, same augmentation, and a resumed run continues ``g``'s sequence."""
        if g is None or g.device == device:
            return g
        if device not in self._device_generators:
            self._device_generators[device] = torch.Generator(device=device)
        seed = int(torch.randint(2**62, (1,), generator=g, device=g.device))
        return self._device_generators[device].manual_seed(seed)

    def _augment(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = x.device
        here = self._on_device(g, dev)

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=here, device=dev)

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
        if self.autoaugment:
            x = self._auto_augment(x, g)  # its one seed comes from g's own device: no sync
        if self.cutout:
            cy = (rand(b) * h).long().view(b, 1, 1, 1)
            cx = (rand(b) * w).long().view(b, 1, 1, 1)
            half = self.cutout // 2
            rows = torch.arange(h, device=dev).view(1, 1, h, 1)
            cols = torch.arange(w, device=dev).view(1, 1, 1, w)
            hole = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
            x = x.masked_fill(hole, 0.0)
        return x

    def _auto_augment(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """AutoAugment per image on uint8 pixels (x in [0, 1] holds uint8 values / 255 here,
        up to brightness jitter, which is rounded). torchvision draws from torch's global CPU
        generator: it runs inside ``fork_rng`` seeded from ``g``, so runs reproduce and the
        global state is untouched."""
        if self._autoaugment is None:
            from torchvision.transforms import v2

            self._autoaugment = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=128)
        pixels = x.mul(255).round_().to(torch.uint8)
        if g is None:
            out = torch.stack([self._autoaugment(img) for img in pixels])
        else:
            seed = int(torch.randint(2**62, (1,), generator=g, device=g.device))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = torch.stack([self._autoaugment(img) for img in pixels])
        return out.float().div_(255.0)
