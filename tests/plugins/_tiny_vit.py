"""A tiny timm ViT registered as the backbone ``tiny-vit`` for the prompt-strategy tests.

8 x 8 single-channel images, 2 x 2 patches (16 patch tokens), width 32, 2 blocks of 2 heads:
a real ``timm.models.vision_transformer.VisionTransformer`` wrapped as every timm backbone is
(:class:`cfs.models.backbones.TimmBackbone`), small enough to train end to end in seconds.
"""

from __future__ import annotations

import torch

from cfs import hookimpl
from cfs.models.backbones import TimmBackbone
from cfs.registry import Registry


#: a state_dict every built ``tiny-vit`` starts from (set by a test's pre-training), or ``None``
WEIGHTS: dict[str, torch.Tensor] | None = None


def tiny_vit(in_channels: int = 1, image_size: int = 8, depth: int = 2, **_: object) -> TimmBackbone:
    from timm.models.vision_transformer import VisionTransformer

    backbone = TimmBackbone(VisionTransformer(img_size=image_size, patch_size=2, in_chans=in_channels, embed_dim=32,
                                              depth=depth, num_heads=2, mlp_ratio=2.0, num_classes=0))
    if WEIGHTS is not None:
        backbone.load_state_dict(WEIGHTS)
    return backbone


@hookimpl
def cfs_add_backbones(registry: Registry) -> None:
    registry.add(tiny_vit, name="tiny-vit")
