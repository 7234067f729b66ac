"""Small Vision Transformers for small images: ``vit-tiny``, ``vit-tiny-p8``, ``vit-small``.

Pre-trained-model continual learning (L2P, DualPrompt, CODA-Prompt, RanPAC, EASE) is defined on
a ViT whose blocks prompts and adapters go into. No ViT weights exist offline here, and a
ViT-B/16 at 224 px is far beyond a CPU benchmark, so these are timm ``VisionTransformer``\\ s
(the same class, block code and parameter names as ViT-B/16, so every in-block mechanism of
:mod:`cfs.models.peft` applies unchanged) sized for 32-64 px images, meant to be pre-trained by
``cfs pretrain`` on data disjoint from the continual stream and loaded with ``--weights PATH``.

| name | width | depth | heads | patch | tokens at 32 px | why |
|---|---|---|---|---|---|---|
| ``vit-tiny`` | 192 | 6 | 3 | side / 8 (4 at 32 px, 8 at 64 px) | 64 | ViT-Ti width and heads, half its depth |
| ``vit-tiny-p8`` | 192 | 6 | 3 | side / 4 (8 at 32 px, 16 at 64 px) | 16 | the same network on a 4x4 grid: about 4x cheaper, for CPU benchmarks |
| ``vit-small`` | 384 | 6 | 6 | side / 8 | 64 | ViT-S width and heads, half its depth |

All use a class token and the class-token output as the feature (timm ``global_pool="token"``,
as ViT-B/16 in the PTM-CIL papers), MLP ratio 4, pre-norm, no dropout. Without ``weights`` the
network is randomly initialised (timm's init); ``--pretrained`` is refused (there are no
published weights for these shapes). A checkpoint written by ``cfs pretrain`` also records
the input statistics it was trained with; loading it sets ``input_norm`` so a run normalises
its inputs the way the weights expect (:func:`cfs.models.pretrained.cfs_before_run`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cfs import hookimpl
from cfs.errors import CfsError
from cfs.models.backbones import TimmBackbone, load_checkpoint
from cfs.registry import Registry


@dataclass(frozen=True)
class VitShape:
    """Width, depth, heads and the number of patches along a side."""

    dim: int
    depth: int
    heads: int
    grid: int


SHAPES: dict[str, VitShape] = {
    "vit-tiny": VitShape(192, 6, 3, 8),
    "vit-tiny-p8": VitShape(192, 6, 3, 4),
    "vit-small": VitShape(384, 6, 6, 8),
}


def checkpoint_norm(path: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input mean/std a ``cfs pretrain`` checkpoint records, if it records them."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # load_checkpoint has already named the problem
        return None
    if isinstance(ckpt, dict) and ckpt.get("mean") is not None and ckpt.get("std") is not None:
        return tuple(float(v) for v in ckpt["mean"]), tuple(float(v) for v in ckpt["std"])
    return None


def small_vit(name: str, in_channels: int = 3, image_size: int = 32, weights: str | None = None) -> nn.Module:
    """Build the small ViT ``name`` for ``image_size`` px images (optionally with local weights)."""
    from timm.models.vision_transformer import VisionTransformer

    shape = SHAPES[name]
    if image_size % shape.grid:
        raise CfsError(f"{name} cuts an image into {shape.grid}x{shape.grid} patches; {image_size} px is not a "
                       f"multiple of {shape.grid} (use --image-size {max(shape.grid, image_size // shape.grid * shape.grid)})")
    model = VisionTransformer(img_size=image_size, patch_size=image_size // shape.grid, in_chans=in_channels,
                              num_classes=0, embed_dim=shape.dim, depth=shape.depth, num_heads=shape.heads,
                              mlp_ratio=4.0, global_pool="token")
    if weights is not None:
        load_checkpoint(model, weights)
    backbone = TimmBackbone(model)
    norm = checkpoint_norm(weights) if weights is not None else None
    if norm is not None and len(norm[0]) == in_channels:
        backbone.input_norm = norm
    return backbone


def _factory(name: str):
    def build(in_channels: int = 3, image_size: int = 32, weights: str | None = None) -> nn.Module:
        return small_vit(name, in_channels, image_size, weights)

    s = SHAPES[name]
    build.__doc__ = (f"{name}: timm VisionTransformer, width {s.dim}, depth {s.depth}, {s.heads} heads, "
                     f"{s.grid}x{s.grid} patches; random init or --weights PATH (cfs pretrain)")
    build.__name__ = name.replace("-", "_")
    return build


@hookimpl
def cfs_add_backbones(registry: Registry) -> None:
    for name in SHAPES:
        registry.add(_factory(name), name=name)
