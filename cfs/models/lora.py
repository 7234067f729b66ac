"""LoRA (Hu et al., ICLR 2022) on the attention projections of a frozen timm ViT.

A frozen ``nn.Linear`` ``W`` becomes ``W x + (alpha / r) * B A dropout(x)`` with a trainable
rank-``r`` pair ``A`` (``r x in``, Kaiming-uniform as the reference ``loralib``) and ``B``
(``out x r``, zeros), so an untrained LoRA returns the pre-trained output exactly. The
convention of :mod:`cfs.models.peft` is kept: the new parameters are registered on the
existing layer (``qkv.lora_A``, ``qkv.lora_B``: in ``state_dict``, kept by ``copy.deepcopy``)
and applied by a forward hook, so the layer's own parameter names and code are untouched and a
checkpoint of the plain ViT still loads.

:func:`lora` adds it to the ``qkv`` and ``proj`` layers of every attention module (anything with
``qkv`` and ``proj`` linear layers: timm's ``Attention``), or to the layers named by ``targets``.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def _apply_lora(m: nn.Linear, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
    x = m.lora_dropout(inputs[0])
    return out + m.lora_scale * F.linear(F.linear(x, m.lora_A), m.lora_B)


def attention_projections(module: nn.Module, names: Iterable[str] = ("qkv", "proj")) -> list[nn.Linear]:
    """The ``names`` linear layers of every attention module (one with ``qkv`` and ``proj``)."""
    names = tuple(names)
    layers = []
    for m in module.modules():
        if isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "proj", None), nn.Linear):
            layers += [getattr(m, n) for n in names]
    return layers


def lora(module: nn.Module, rank: int = 4, alpha: float | None = None, dropout: float = 0.0,
         targets: Iterable[nn.Linear] | None = None) -> list[nn.Parameter]:
    """Add LoRA to ``targets`` (default: every attention ``qkv`` and ``proj``), in place.

    ``alpha`` defaults to ``rank`` (scale 1). Every existing parameter of ``module`` is frozen;
    the ``lora_A``/``lora_B`` parameters are trainable and returned. Applying it twice to a layer
    is an error."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    layers = list(attention_projections(module) if targets is None else targets)
    if not layers:
        raise ValueError("lora: no attention module with qkv and proj linear layers in the module")
    module.requires_grad_(False)
    params: list[nn.Parameter] = []
    for m in layers:
        if not isinstance(m, nn.Linear):
            raise ValueError(f"lora: targets must be nn.Linear, got {type(m).__name__}")
        if hasattr(m, "lora_A"):
            raise ValueError("lora: the layer already has LoRA parameters")
        kw = {"device": m.weight.device, "dtype": m.weight.dtype}
        a = torch.empty(rank, m.in_features, **kw)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        m.register_parameter("lora_A", nn.Parameter(a))
        m.register_parameter("lora_B", nn.Parameter(torch.zeros(m.out_features, rank, **kw)))
        m.lora_scale = (rank if alpha is None else alpha) / rank
        m.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        m.register_forward_hook(_apply_lora)
        params += [m.lora_A, m.lora_B]
    return params
