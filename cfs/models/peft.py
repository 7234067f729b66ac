"""Parameter-efficient tuning of a frozen backbone, without copying the backbone's code.

APER (Zhou et al., IJCV 2024) adapts a pre-trained model on the first task only; the official
code (github:zhoudw-zdw/RevisitingCIL, ``models/aper_ssf.py``, ``models/aper_bn.py``) offers,
for CNN backbones:

* **SSF** (scale and shift of features): a learnable per-channel ``scale`` and ``shift`` after
  layers of the network, everything but them (and the classifier) frozen. The official code
  names them ``ssf_scale``/``ssf_shift`` inside its own SSF ResNet/ViT definitions; here
  :func:`ssf` adds them to *any* module by registering the two parameters on an existing layer
  and a forward hook that applies ``out * scale + shift`` along the channel axis.
* **BN**: the BatchNorm running statistics are zeroed and re-estimated by forward passes in
  train mode over the first task's (augmented) training images, without gradients and without
  training the affine parameters (``_init_train`` of ``aper_bn.py``). :func:`bn_adapt` puts the
  layers in that state, :func:`estimate_bn` runs the passes.

and, for ViTs (``models/adam_adapter.py`` with ``backbone/vit_adapter.py``):

* **AdaptFormer**: in every transformer block, a bottleneck ``up(relu(down(x))) * scale``
  (``ffn_num`` 64, scale 0.1, ``down`` Kaiming-uniform, ``up`` and biases zero, dropout 0.1)
  in parallel to the MLP branch: ``x + mlp(norm2(x)) + adapter(x)`` where ``x`` is the
  block's input to the MLP branch. :func:`adaptformer` adds it to timm ``VisionTransformer``
  blocks (anything with ``norm2``/``mlp``/``drop_path2``) by a pre-hook that records
  ``norm2``'s input and a wrapper around ``drop_path2`` that adds the adapter's output; the
  block's code and its parameter names are untouched.

Departures from the official code, all stated:

* SSF placement: after every BatchNorm layer when the network has any (the CNN case), else
  after every Conv2d/Linear/LayerNorm. The official SSF ResNet/ViT place them inside their own
  block definitions; the hook placement is the closest generic equivalent.
* SSF initialisation: scale 1, shift 0 (the official code draws scale ~ N(1, 0.02) and shift ~
  N(0, 0.02)); identity at the start, so an untrained SSF returns the pre-trained features
  exactly, and the result is deterministic.
* BN re-estimation uses the cumulative average over all passes (``momentum=None``) instead of
  an exponential average with momentum 0.1 started from zeroed buffers: the official average
  is biased towards zero when there are few batches (tiny CPU runs); with many batches both
  agree. ``bn_adapt(..., affine=True)`` additionally makes the affine parameters trainable
  (METHODS.md 11.6 allows it; the official BN variant does not train them).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def backbone_family(module: nn.Module) -> str:
    """``"vit"`` (a transformer with ``blocks`` of attention), ``"cnn"`` (has a Conv2d), else ``"other"``."""
    for m in module.modules():
        if type(m).__name__ == "VisionTransformer" or (hasattr(m, "blocks") and any(
                hasattr(b, "attn") for b in getattr(m, "blocks", []))):
            return "vit"
    if any(isinstance(m, nn.Conv2d) for m in module.modules()):
        return "cnn"
    return "other"


def _channels(m: nn.Module) -> tuple[int, int]:
    """(number of channels, axis of the output they lie on) for a layer SSF can follow."""
    if isinstance(m, _BatchNorm):
        return m.num_features, 1
    if isinstance(m, nn.Conv2d):
        return m.out_channels, 1
    if isinstance(m, nn.Linear):
        return m.out_features, -1
    if isinstance(m, nn.LayerNorm):
        return int(m.normalized_shape[-1]), -1
    raise TypeError(f"SSF cannot follow a {type(m).__name__}")


def _apply_ssf(m: nn.Module, inputs, out: torch.Tensor) -> torch.Tensor:
    shape = [1] * out.dim()
    axis = m.ssf_axis % out.dim()
    shape[axis] = -1
    return out * m.ssf_scale.view(shape) + m.ssf_shift.view(shape)


def ssf_targets(module: nn.Module) -> list[nn.Module]:
    """Layers :func:`ssf` follows: every BatchNorm, or, without any, every Conv2d/Linear/LayerNorm."""
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    if bns:
        return bns
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.LayerNorm))]


def ssf(module: nn.Module, targets: Iterable[nn.Module] | None = None) -> list[nn.Parameter]:
    """Add per-channel scale/shift after ``targets`` (default :func:`ssf_targets`), in place.

    Every existing parameter of ``module`` is frozen; the new ``ssf_scale``/``ssf_shift``
    parameters (registered on the target layers, so they are in ``state_dict`` and survive
    ``copy.deepcopy``) are trainable and returned. Applying it twice is an error."""
    targets = list(ssf_targets(module) if targets is None else targets)
    if not targets:
        raise ValueError("ssf: the module has no BatchNorm, Conv2d, Linear or LayerNorm layer")
    module.requires_grad_(False)
    params: list[nn.Parameter] = []
    for m in targets:
        if hasattr(m, "ssf_scale"):
            raise ValueError(f"ssf: {type(m).__name__} already has SSF parameters")
        n, axis = _channels(m)
        ref = next(iter(m.parameters()), None)
        kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        m.register_parameter("ssf_scale", nn.Parameter(torch.ones(n, **kw)))
        m.register_parameter("ssf_shift", nn.Parameter(torch.zeros(n, **kw)))
        m.ssf_axis = axis
        m.register_forward_hook(_apply_ssf)
        params += [m.ssf_scale, m.ssf_shift]
    return params


def bn_adapt(module: nn.Module, affine: bool = False) -> list[nn.Parameter]:
    """Zero every BatchNorm's running statistics and make them a cumulative average, in place.

    Everything is frozen except, with ``affine=True``, the BatchNorm weights and biases, which
    are returned (an empty list otherwise). Run :func:`estimate_bn` afterwards."""
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        raise ValueError("bn_adapt: the module has no BatchNorm layer with running statistics")
    module.requires_grad_(False)
    params: list[nn.Parameter] = []
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over all passes
        if affine and m.affine:
            m.weight.requires_grad_(True)
            m.bias.requires_grad_(True)
            params += [m.weight, m.bias]
    return params


class Bottleneck(nn.Module):
    """AdaptFormer's adapter without its residual: ``scale * up(dropout(relu(down(x))))``."""

    def __init__(self, dim: int, bottleneck: int = 64, scale: float = 0.1, dropout: float = 0.1) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = scale
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.dropout(torch.relu(self.down(x))))


def _record_input(m: nn.Module, inputs) -> None:
    m._peft_input = inputs[0]


class _ParallelAdd(nn.Module):
    """Wraps a block's ``drop_path2``: its output plus the adapter applied to ``norm2``'s input."""

    def __init__(self, inner: nn.Module, adapter: nn.Module, source: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter
        object.__setattr__(self, "source", source)  # a reference, not a submodule (deepcopy keeps it inside the copy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.adapter(self.source._peft_input)


def adaptformer(module: nn.Module, bottleneck: int = 64, scale: float = 0.1, dropout: float = 0.1) -> list[nn.Parameter]:
    """Add an AdaptFormer adapter parallel to the MLP of every transformer block, in place.

    Blocks are the submodules with ``norm2``, ``mlp`` and ``drop_path2`` (timm's ``Block``).
    Everything else is frozen; the adapters' parameters are trainable and returned."""
    blocks = [m for m in module.modules() if all(hasattr(m, a) for a in ("norm2", "mlp", "drop_path2"))]
    if not blocks:
        raise ValueError("adaptformer: no transformer block (with norm2, mlp, drop_path2) in the module")
    module.requires_grad_(False)
    params: list[nn.Parameter] = []
    for b in blocks:
        if isinstance(b.drop_path2, _ParallelAdd):
            raise ValueError("adaptformer: the block already has an adapter")
        dim = b.norm2.normalized_shape[-1] if isinstance(b.norm2, nn.LayerNorm) else b.mlp.fc1.in_features
        ref = next(b.mlp.parameters())
        adapter = Bottleneck(int(dim), bottleneck, scale, dropout).to(device=ref.device, dtype=ref.dtype)
        adapter.train(b.training)  # a new module is in train mode; follow the block's mode
        b.norm2.register_forward_pre_hook(_record_input)
        b.drop_path2 = _ParallelAdd(b.drop_path2, adapter, b.norm2)
        params += list(adapter.parameters())
    return params


class _SwitchableAdd(nn.Module):
    """Wraps a block's ``drop_path2``: its output plus the *active* adapter of a list (none when
    ``active`` is ``None``) applied to ``norm2``'s input."""

    def __init__(self, inner: nn.Module, source: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.adapters = nn.ModuleList()
        self.active: int | None = None
        object.__setattr__(self, "source", source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out if self.active is None else out + self.adapters[self.active](self.source._peft_input)


class AdapterSets:
    """Several AdaptFormer adapter sets in one ViT, one set active at a time (EASE's subspaces).

    :func:`adaptformer` adds one adapter per block for good; methods that keep one adapter set
    per task (EASE, Zhou et al. CVPR 2024) need many on the same frozen backbone, switched per
    forward pass. ``AdapterSets(vit)`` puts a switch parallel to every block's MLP (timm blocks,
    as :func:`adaptformer`) and freezes the network; :meth:`add` appends a new set (same
    initialisation as :func:`adaptformer`) and returns its parameters, freezing the earlier sets;
    :meth:`use` selects the set the next forward passes run with (``None``: the plain backbone).
    The adapters are submodules of the blocks, so ``state_dict``/``deepcopy`` carry them."""

    def __init__(self, module: nn.Module, bottleneck: int = 64, scale: float = 0.1, dropout: float = 0.1) -> None:
        blocks = [m for m in module.modules() if all(hasattr(m, a) for a in ("norm2", "mlp", "drop_path2"))]
        if not blocks:
            raise ValueError("AdapterSets: no transformer block (with norm2, mlp, drop_path2) in the module")
        module.requires_grad_(False)
        self.switches: list[_SwitchableAdd] = []
        for b in blocks:
            if isinstance(b.drop_path2, (_ParallelAdd, _SwitchableAdd)):
                raise ValueError("AdapterSets: the block already has adapters")
            b.norm2.register_forward_pre_hook(_record_input)
            b.drop_path2 = _SwitchableAdd(b.drop_path2, b.norm2).train(b.training)  # follow the block's mode
            b.drop_path2.dim = int(b.norm2.normalized_shape[-1] if isinstance(b.norm2, nn.LayerNorm)
                                   else b.mlp.fc1.in_features)
            self.switches.append(b.drop_path2)
        self.bottleneck, self.scale, self.dropout = bottleneck, scale, dropout

    def __len__(self) -> int:
        return len(self.switches[0].adapters)

    def add(self) -> list[nn.Parameter]:
        """Append a fresh adapter set (made active), freeze the earlier ones; its parameters."""
        params: list[nn.Parameter] = []
        for sw in self.switches:
            sw.adapters.requires_grad_(False)
            ref = next(iter([*sw.inner.parameters(), *sw.source.parameters()]), None)
            kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
            adapter = Bottleneck(sw.dim, self.bottleneck, self.scale, self.dropout).to(**kw)
            adapter.train(sw.training)
            sw.adapters.append(adapter)
            params += list(adapter.parameters())
        self.use(len(self) - 1)
        return params

    def use(self, index: int | None) -> None:
        """Run the next forward passes with adapter set ``index`` (``None``: no adapter)."""
        if index is not None and not 0 <= index < len(self):
            raise IndexError(f"adapter set {index} does not exist (there are {len(self)})")
        for sw in self.switches:
            sw.active = index


@torch.no_grad()
def estimate_bn(module: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Forward ``batches`` in train mode so the BatchNorm layers accumulate their statistics;
    the module is left in eval mode."""
    module.train()
    for x in batches:
        module(x)
    module.eval()
