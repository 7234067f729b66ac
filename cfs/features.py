"""Cache of frozen-backbone features: each image goes through the backbone once per run.

Methods that train only a head, an adapter or a projection on top of a frozen pre-trained
backbone (SimpleCIL, APER, NCPTM-CIL, TEEN's prototypes) need the backbone's features of the
same images epoch after epoch; recomputing them dominates the run time (a ViT or EfficientNet
forward costs orders of magnitude more than a linear head). The cache computes them once and
keeps them in memory for the run and, optionally, on disk across runs.

An entry is keyed by everything the features depend on: the backbone's class and a hash of
its weights and buffers, the transform's parameters (normalisation, resize), and a hash of the
data; changing any of these makes a new entry instead of serving stale features. Features are
computed in eval mode, without augmentation, in fixed-size chunks, so a cached tensor is
bitwise what a direct ``backbone(transform(x))`` over the same chunks returns.

Disk entries go to ``$CFS_CACHE_DIR/features`` (default ``~/.cache/cfs/features``) when the
cache is built with ``disk=True`` or ``$CFS_FEATURE_CACHE=disk``; ``$CFS_FEATURE_CACHE=off``
disables caching (every call recomputes), which is how the speed-up is measured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm
from torch import nn

from cfs.data.cache import cache_dir

FORMAT_VERSION = 1
CHUNK = 256


def tensor_digest(t: torch.Tensor, h: "hashlib._Hash | None" = None) -> str:
    """Hash of a tensor's dtype, shape and bytes."""
    h = h or hashlib.blake2b(digest_size=16)
    t = t.detach().contiguous().cpu()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def module_digest(module: nn.Module) -> str:
    """Class name plus every parameter and buffer (the weights, BN statistics)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        tensor_digest(t, h)
    return h.hexdigest()


def transform_digest(transform: Any) -> str:
    """The transform's parameters (mean, std, resize, ...): its dataclass fields or its repr."""
    fields = dataclasses.asdict(transform) if dataclasses.is_dataclass(transform) else repr(transform)
    return hashlib.blake2b(repr(fields).encode(), digest_size=16).hexdigest()


def cache_mode() -> str:
    """``$CFS_FEATURE_CACHE``: ``memory`` (default), ``disk`` or ``off``."""
    mode = os.environ.get("CFS_FEATURE_CACHE", "memory").lower()
    return mode if mode in ("memory", "disk", "off") else "memory"


@torch.no_grad()
def compute_features(backbone: nn.Module, transform: Callable, x: torch.Tensor, device: torch.device,
                     chunk: int = CHUNK) -> torch.Tensor:
    """``backbone(transform(x))`` in eval mode, chunk by chunk, on ``device``; the model's
    train/eval mode is restored afterwards."""
    was_training = backbone.training
    backbone.eval()
    try:
        steps = tqdm(range(0, len(x), chunk), desc=f"extracting features ({len(x)} images)", unit="batch",
                     leave=False, disable=None)
        out = [backbone(transform(x[i : i + chunk].to(device), train=False)).float() for i in steps]
    finally:
        backbone.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


class FeatureCache:
    """Features of (backbone, transform, data) triples, in memory and optionally on disk."""

    def __init__(self, disk: bool | None = None, enabled: bool | None = None, folder: Path | None = None) -> None:
        mode = cache_mode()
        self.enabled = (mode != "off") if enabled is None else enabled
        self.disk = (mode == "disk") if disk is None else disk
        self.folder = folder
        self._memory: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0

    def key(self, backbone: nn.Module, transform: Any, x: torch.Tensor, tag: str = "") -> str:
        """Everything the features depend on, hashed into one string."""
        parts = [str(FORMAT_VERSION), tag, module_digest(backbone), transform_digest(transform), tensor_digest(x)]
        return hashlib.blake2b("|".join(parts).encode(), digest_size=20).hexdigest()

    def _path(self, key: str) -> Path:
        return (self.folder or cache_dir() / "features") / f"{key}.pt"

    def features(self, backbone: nn.Module, transform: Callable, x: torch.Tensor, device: torch.device,
                 tag: str = "") -> torch.Tensor:
        """The features of ``x``: from memory, from disk, or computed (and then stored)."""
        if not self.enabled:
            self.misses += 1
            return compute_features(backbone, transform, x, device)
        key = self.key(backbone, transform, x, tag)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        feats = self._load(key, device) if self.disk else None
        if feats is None:
            self.misses += 1
            feats = compute_features(backbone, transform, x, device)
            if self.disk:
                self._save(key, feats)
        else:
            self.hits += 1
        self._memory[key] = feats
        return feats

    @torch.no_grad()
    def prepared(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Features of an already transformed batch (evaluation passes the same test batches
        after every experience); keyed by weights and batch content, memory only."""
        if not self.enabled:
            return backbone(x).float()
        key = self.key(backbone, "prepared", x, "prepared")
        if key not in self._memory:
            self.misses += 1
            self._memory[key] = backbone(x).float()
        else:
            self.hits += 1
        return self._memory[key]

    def _load(self, key: str, device: torch.device) -> torch.Tensor | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception:  # a truncated or foreign file: recompute and overwrite it
            return None

    def _save(self, key: str, feats: torch.Tensor) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(feats.cpu(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def clear(self) -> None:
        self._memory.clear()


def run_cache(state: Any) -> FeatureCache:
    """The run's shared cache (one per run, in ``state.extra``), so composed strategies share it."""
    cache = state.extra.get("feature_cache")
    if cache is None:
        cache = state.extra["feature_cache"] = FeatureCache()
    return cache


def cached_features(state: Any, x: torch.Tensor, backbone: nn.Module | None = None) -> torch.Tensor:
    """Features of raw images ``x`` under the run's transform, through the run's cache."""
    return run_cache(state).features(backbone if backbone is not None else state.model.backbone,
                                     state.transform, x, state.device)
