"""LaViT, the Less-attention Vision Transformer (Zhang, Liu, Lin, He; CVPR 2024, arXiv 2406.00427),
sized for small images, as registered backbones ``lavit-tiny`` and ``lavit-small``.

No official code was released; this follows METHODS.md section 9. A pyramid of stages (here 3,
not PVT's 4: at 32 px the fourth stage would hold a single token). Stage ``m`` has ``L_m``
layers: the first (``va_layers``, default 1) are Vanilla-Attention (VA) layers, standard
multi-head self-attention ``A = QK^T/sqrt(d)``, ``Z = softmax(A) V``; the rest are
Less-Attention (LA) layers, which compute no query or key at all and transform the previous
layer's pre-softmax scores instead::

    A^l = Psi( Theta(A^{l-1})^T )^T,   Z^l = softmax(A^l) V^l

``Theta`` and ``Psi`` are N x N linear maps along the token axes (one mixes the key axis, the
other the query axis; shared across heads, initialised to the identity). Only ``V`` (and the
MLP) is computed fresh. Between stages the last scores of stage m-1 (mean over its heads, a
1-channel N x N image) are downsampled by a conv with kernel = stride = 4 (tokens shrink 4x)
and added, scaled by a learnable ``gamma`` (init 1e-4), to the first VA scores of stage m
(residual attention downsampling). The Diagonality-Preserving loss on every LA map (after the
softmax, averaged over the batch), normalised by N^2 and averaged over heads::

    L_DP(A) = [ sum_ij |A_ij - A_ji| + sum_i ( sum_{j!=i} A_ij - (N-1) A_ii ) ] / N^2

is added with weight ``dp_weight`` (1) to whatever loss the strategy minimises: the backbone
attaches it to its output in training (:class:`_WithAuxiliaryLoss` passes the output through
and gives the loss a gradient of 1 on backward), so every class-incremental and few-shot
strategy trains LaViT's full objective without knowing about it. ``last_dp_loss`` holds the
value of the last training forward.

Small-image sizing: patch size ``ceil(image_size / 8)`` (4 at 32 px, 1 at 8 px, 11 at 84 px;
the input is zero-padded to ``8 * patch``), so stage 1 is an 8 x 8 grid, then 4 x 4 and 2 x 2;
patch merging is a 2 x 2 stride-2 conv with LayerNorm, each stage has learnable position
embeddings, features are the mean of the last stage's tokens after a final LayerNorm.

==============  ==============  =========  ==========  ==========
name            dims            heads      depths      mlp ratio
==============  ==============  =========  ==========  ==========
lavit-tiny      64, 128, 256    1, 2, 4    2, 2, 2     4
lavit-small     64, 128, 320    1, 2, 5    3, 4, 6     4
==============  ==============  =========  ==========  ==========

FLOPs (:func:`attention_flops`). Counting multiply-adds of the matrix products (x2 for FLOPs,
as ``torch.utils.flop_counter`` does), a VA layer with N tokens, width D, H heads, MLP ratio r
costs ``(4 + 2r) N D^2 + 2 N^2 D`` (QKV 3ND^2, output projection ND^2, QK^T and AV N^2 D each,
MLP 2rND^2). An LA layer drops the Q and K projections and QK^T and adds the two N x N maps on
each head's score matrix: ``(2 + 2r) N D^2 + N^2 D + 2 H N^3``. Each LA layer so saves
``2 N D^2 + N^2 D - 2 H N^3`` multiply-adds per image, and each stage transition adds the
attention-downsampling conv, ``16 N_m^2``. So::

    FLOPs(LaViT) = FLOPs(all-VA) - 2 * [ sum_LA (2 N D^2 + N^2 D - 2 H N^3) - sum_{m>=2} 16 N_m^2 ]

per image, where the all-VA model (``less_attention=False``) is the same pyramid ViT with full
attention in every layer (same width and depth, no attention downsampling). The saving is
positive whenever ``2 D^2 + N D > 2 H N^2`` (true at every stage here: N = 64, 16, 4). At 32 px
this is 0.938 of the all-VA FLOPs for lavit-tiny (39.98 vs 42.63 MFLOPs per image) and 0.886 for
lavit-small (97.05 vs 109.57 MFLOPs), exactly what ``FlopCounterMode`` measures. The N^3 term grows fast with the token count: at
N = 3136 (PVT's 224 px stage 1) the maps would cost more than the attention they replace, which is
why this sizing keeps stage 1 at 8 x 8 tokens.

Departures: 3 stages instead of 4 (small images), no spatial-reduction attention (PVT's keys
pool tokens; with <= 64 tokens there is nothing to save), no stochastic depth or dropout; the
downsampled attention is the previous stage's last *pre-softmax* scores. No pretrained weights
exist; ``--weights PATH`` loads a local checkpoint, for example one ``cfs pretrain --backbone lavit-tiny`` saved
(its input statistics too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.errors import CfsError
from cfs.registry import Registry

GRID = 8  #: stage-1 token grid side: the patch size is chosen so that the image gives GRID x GRID patches


@dataclass(frozen=True)
class LaViTSize:
    """Width, heads and depth of each stage."""

    dims: tuple[int, ...]
    heads: tuple[int, ...]
    depths: tuple[int, ...]
    mlp_ratio: int = 4


SIZES = {
    "tiny": LaViTSize(dims=(64, 128, 256), heads=(1, 2, 4), depths=(2, 2, 2)),
    "small": LaViTSize(dims=(64, 128, 320), heads=(1, 2, 5), depths=(3, 4, 6)),
}


class _WithAuxiliaryLoss(torch.autograd.Function):
    """Identity on ``out``; on backward, gives the scalar ``aux`` a gradient of 1, so
    ``loss(out).backward()`` also back-propagates ``aux`` (as if it were added to the loss)."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.aux_meta = (aux.dtype, aux.device, aux.requires_grad)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        dtype, device, needed = ctx.aux_meta
        return grad, (torch.ones((), dtype=dtype, device=device) if needed else None)


def diagonality_preserving_loss(attn: torch.Tensor) -> torch.Tensor:
    """L_DP of softmax attention maps ``attn`` (B, H, N, N): batch-averaged map per head,
    ``(sum |A - A^T| + sum_i (sum_{j!=i} A_ij - (N-1) A_ii)) / N^2``, mean over heads.
    Minimising it makes the maps symmetric and raises their diagonal mass."""
    a = attn.mean(0)  # (H, N, N)
    n = a.shape[-1]
    symmetry = (a - a.transpose(-1, -2)).abs().sum((-1, -2))
    diag = a.diagonal(dim1=-2, dim2=-1)
    off = a.sum(-1) - diag
    dominance = (off - (n - 1) * diag).sum(-1)
    return ((symmetry + dominance) / n**2).mean()


class AttentionDownsample(nn.Module):
    """Residual attention downsampling between stages: the previous stage's last scores,
    averaged over heads, as a 1-channel N' x N' image through a kernel = stride = 4 conv
    (N = N'/4), times a learnable ``gamma`` (init 1e-4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 4, stride=4)
        self.gamma = nn.Parameter(torch.tensor(1e-4))

    def forward(self, prev_scores: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.conv(prev_scores.mean(1, keepdim=True))  # (B, 1, N, N): broadcast over heads


class VanillaAttention(nn.Module):
    """Multi-head self-attention that returns its pre-softmax scores (timm-style ``qkv``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if residual is not None:
            scores = scores + residual
        attn = scores.softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out), scores, attn


class LessAttention(nn.Module):
    """The LA layer: ``A^l = Psi(Theta(A^{l-1})^T)^T``, ``Z = softmax(A^l) V``; no Q, no K."""

    def __init__(self, dim: int, num_heads: int, tokens: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.v = nn.Linear(dim, dim)
        self.theta = nn.Linear(tokens, tokens, bias=False)
        self.psi = nn.Linear(tokens, tokens, bias=False)
        for m in (self.theta, self.psi):
            nn.init.eye_(m.weight)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, prev_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        v = self.v(x).view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)
        scores = self.psi(self.theta(prev_scores).transpose(-1, -2)).transpose(-1, -2)
        attn = scores.softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out), scores, attn


class Block(nn.Module):
    """Pre-norm transformer layer around a VA or LA attention."""

    def __init__(self, dim: int, num_heads: int, tokens: int, mlp_ratio: int, less: bool) -> None:
        super().__init__()
        self.less = less
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LessAttention(dim, num_heads, tokens) if less else VanillaAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, scores: torch.Tensor | None, residual: torch.Tensor | None):
        if self.less:
            out, scores, attn = self.attn(self.norm1(x), scores)
        else:
            out, scores, attn = self.attn(self.norm1(x), residual)
        x = x + out
        return x + self.mlp(self.norm2(x)), scores, attn


class Stage(nn.Module):
    """Patch embedding (stage 1) or 2x2 patch merging, position embeddings, VA then LA layers."""

    def __init__(self, cin: int, dim: int, heads: int, depth: int, grid: int, patch: int, mlp_ratio: int,
                 va_layers: int, less_attention: bool, first: bool) -> None:
        super().__init__()
        self.grid = grid
        self.embed = nn.Conv2d(cin, dim, patch, stride=patch)
        self.embed_norm = nn.LayerNorm(dim)
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        tokens = grid * grid
        self.blocks = nn.ModuleList(
            Block(dim, heads, tokens, mlp_ratio, less=less_attention and i >= va_layers) for i in range(depth))
        self.downsample = AttentionDownsample() if less_attention and not first else None

    def forward(self, x: torch.Tensor, prev_scores: torch.Tensor | None):
        x = self.embed(x)
        b, d, h, w = x.shape
        x = self.embed_norm(x.flatten(2).transpose(1, 2)) + self.pos
        residual = self.downsample(prev_scores) if self.downsample is not None and prev_scores is not None else None
        scores, maps = None, []
        for i, blk in enumerate(self.blocks):
            x, scores, attn = blk(x, scores, residual if i == 0 else None)
            if blk.less:
                maps.append(attn)
        return x, scores, maps


class LaViT(nn.Module):
    """The pyramid of VA/LA stages; ``forward`` -> pooled features, ``tokens`` -> last-stage tokens."""

    def __init__(self, in_channels: int, image_size: int, size: LaViTSize, va_layers: int = 1,
                 less_attention: bool = True, dp_weight: float = 1.0, patch_size: int | None = None) -> None:
        super().__init__()
        if va_layers < 1:
            raise CfsError(f"LaViT needs at least one vanilla-attention layer per stage, got va_layers={va_layers}")
        self.patch = patch_size or math.ceil(image_size / GRID)
        grid = math.ceil(image_size / self.patch)
        stages = len(size.dims)
        if grid % 2 ** (stages - 1):
            raise CfsError(f"LaViT: a {image_size}px image in {self.patch}px patches gives a {grid}x{grid} grid, "
                           f"which {stages - 1} 2x2 merges cannot halve; choose a patch size giving a multiple of "
                           f"{2 ** (stages - 1)}")
        self.size, self.image_size, self.pad = size, image_size, grid * self.patch - image_size
        self.less_attention, self.va_layers, self.dp_weight = less_attention, va_layers, dp_weight
        cins = (in_channels,) + size.dims[:-1]
        self.stages = nn.ModuleList(
            Stage(cins[m], size.dims[m], size.heads[m], size.depths[m], grid >> m, self.patch if m == 0 else 2,
                  size.mlp_ratio, va_layers, less_attention, first=m == 0) for m in range(stages))
        self.norm = nn.LayerNorm(size.dims[-1])
        self.out_dim = size.dims[-1]
        self.last_dp_loss: torch.Tensor | None = None
        self.apply(_init)
        for m in self.modules():  # _init must not undo the identity init of Theta and Psi
            if isinstance(m, LessAttention):
                nn.init.eye_(m.theta.weight)
                nn.init.eye_(m.psi.weight)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (0, self.pad, 0, self.pad))
        scores, maps = None, []
        b = x.shape[0]
        for stage in self.stages:
            x, scores, stage_maps = stage(x, scores)
            maps += stage_maps
            x = x.transpose(1, 2).reshape(b, -1, stage.grid, stage.grid)
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        if maps and self.dp_weight > 0 and torch.is_grad_enabled() and self.training:
            dp = self.dp_weight * sum(diagonality_preserving_loss(a) for a in maps)
            self.last_dp_loss = dp.detach()
            tokens = _WithAuxiliaryLoss.apply(tokens, dp)
        return tokens

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x).mean(1)


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def attention_flops(size: LaViTSize, in_channels: int, image_size: int, less_attention: bool = True,
                    va_layers: int = 1, batch: int = 1) -> int:
    """The analytic FLOP count (2 x multiply-adds of every matrix product and conv) of a
    forward pass, from the formula in the module docstring; what ``FlopCounterMode`` measures."""
    patch = math.ceil(image_size / GRID)
    macs, cin = 0, in_channels
    for m, (d, h, depth) in enumerate(zip(size.dims, size.heads, size.depths)):
        n = (GRID >> m) ** 2
        k = patch if m == 0 else 2
        macs += n * d * cin * k * k  # patch embedding / merging conv
        for i in range(depth):
            mlp = 2 * size.mlp_ratio * n * d * d
            if less_attention and i >= va_layers:
                macs += 2 * n * d * d + n * n * d + 2 * h * n**3 + mlp
            else:
                macs += 4 * n * d * d + 2 * n * n * d + mlp
        if less_attention and m > 0:
            macs += 16 * n * n  # attention-downsampling conv
        cin = d
    return 2 * macs * batch


def lavit(in_channels: int, image_size: int, size: str, weights: str | None = None) -> LaViT:
    """A registered LaViT size; ``weights`` loads a local checkpoint (``--weights PATH``)."""
    model = LaViT(in_channels, image_size, SIZES[size])
    if weights is not None:
        from cfs.models.backbones import load_checkpoint
        from cfs.models.vit import checkpoint_norm

        load_checkpoint(model, weights)
        norm = checkpoint_norm(weights)  # the input statistics a ``cfs pretrain`` checkpoint records
        if norm is not None and len(norm[0]) == in_channels:
            model.input_norm = norm
    return model


def lavit_tiny(in_channels: int = 3, image_size: int = 32, weights: str | None = None) -> LaViT:
    """LaViT-tiny for small images: 3 stages 64/128/256 wide, 2 layers each (1 VA + 1 LA)."""
    return lavit(in_channels, image_size, "tiny", weights)


def lavit_small(in_channels: int = 3, image_size: int = 32, weights: str | None = None) -> LaViT:
    """LaViT-small for small images: 3 stages 64/128/320 wide, 3/4/6 layers (1 VA, the rest LA)."""
    return lavit(in_channels, image_size, "small", weights)


@hookimpl
def cfs_add_backbones(registry: Registry) -> None:
    registry.add(lavit_tiny, name="lavit-tiny")
    registry.add(lavit_small, name="lavit-small")
