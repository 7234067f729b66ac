"""Prompt tuning and prefix tuning inside a frozen timm ``VisionTransformer``, without copying it.

Prompt-based continual learners (L2P, DualPrompt, CODA-Prompt) keep a pre-trained ViT frozen
and learn only what they insert into its token sequence, chosen per image:

* **prompt tuning** (L2P, VPT): learnable tokens of width ``embed_dim`` join the sequence in
  front of block ``i``. At the first prompted block they are inserted right after the prefix
  tokens ([CLS], registers), so the sequence reads ``[CLS, prompts, patches]``; at a later
  prompted block (VPT-deep) they *replace* the prompt tokens of the previous block's output.
* **prefix tuning** (DualPrompt, CODA-Prompt): learnable key and value prefixes ``(B, L, D)``
  are concatenated in front of the keys and values of block ``i``'s self-attention, after the
  module's own ``qkv`` projection, as the official code of both methods does
  (github:JH-LEE-KR/dualprompt-pytorch ``attention.py``, github:GT-RIPL/CODA-Prompt
  ``models/vit.py``). The queries stay the patch/[CLS] tokens, so the sequence length does
  not change.

:func:`prompted` installs the insertion points once per ViT and returns its
:class:`PromptedViT`; a forward pass carries prompts only inside ``with pv.use(inputs):``, so
outside that block the ViT computes exactly what it computed before (the frozen backbone's
query features of L2P/DualPrompt/CODA-Prompt come from the same module, un-prompted). Nothing
is copied from timm and no parameter is added to the ViT: the prompts stay with the method
that owns them (so the ViT's ``state_dict``, and the feature cache keyed by it, are unchanged).
The insertion points are:

* a forward pre-hook on every block (prompt tokens);
* a per-instance ``forward`` on every block's attention module (:func:`_prefix_attention`):
  with no prefix set it calls the class's own ``forward`` unchanged; with one it runs
  multi-head attention with the module's own ``qkv``, ``q_norm``/``k_norm``, scale,
  ``attn_drop``, ``norm``, ``proj`` and ``proj_drop`` over the prefixed keys and values;
* for ``pool="prompt"`` (L2P's ``head_type='prompt'``): a forward hook on the final ``norm``
  that keeps the output of the prompt positions, and a forward pre-hook on ``fc_norm`` (which
  the ViT applies right after its pooling) that replaces the pooled feature by their mean.

Departure from l2p-pytorch: prompt tokens carry no position embedding (l2p-pytorch adds the
[CLS] position embedding to them, a constant shift of a freely learnt token).
"""

from __future__ import annotations

import contextlib
import functools
import types
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

POOLS = ("model", "prompt")


def find_vit(module: nn.Module) -> nn.Module:
    """The timm ``VisionTransformer`` inside ``module`` (a module with ``patch_embed``,
    ``blocks`` of attention blocks and a final ``norm``); ``ValueError`` when there is none."""
    for m in module.modules():
        blocks = getattr(m, "blocks", None)
        if (hasattr(m, "patch_embed") and hasattr(m, "norm") and isinstance(blocks, nn.Sequential) and len(blocks)
                and all(hasattr(b, "attn") and hasattr(b.attn, "qkv") for b in blocks)):
            return m
    raise ValueError(f"no timm VisionTransformer (patch_embed, blocks with attn.qkv, norm) in {type(module).__name__}")


@dataclass
class PromptInputs:
    """What one forward pass inserts.

    ``tokens``: block index -> prompt tokens ``(B, L, D)`` (prompt tuning); ``prefixes``: block
    index -> ``(keys, values)``, each ``(B, L, D)`` (prefix tuning); ``pool``: ``"model"`` keeps
    the ViT's own pooling, ``"prompt"`` pools the mean of the prompt tokens' outputs."""

    tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    prefixes: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    pool: str = "model"


def _prefix_attention(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """A timm ``Attention`` forward with key/value prefixes; the class's own forward without."""
    prefix = getattr(self, "cfs_prefix", None)
    if prefix is None:
        return type(self).forward(self, x, *args, **kwargs)
    if args or kwargs.get("attn_mask") is not None or kwargs.get("is_causal"):
        raise NotImplementedError("prefix tuning with an attention mask is not supported")
    pk, pv = prefix
    B, N, _ = x.shape
    heads, head_dim = self.num_heads, self.head_dim
    gate_layer = getattr(self, "gate", None)
    gate = gate_layer(x).sigmoid() if gate_layer is not None else None
    q, k, v = self.qkv(x).reshape(B, N, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = self.q_norm(q), self.k_norm(k)

    def per_head(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(B, t.shape[1], heads, head_dim).transpose(1, 2).to(k.dtype)

    k = torch.cat([per_head(pk), k], dim=2)
    v = torch.cat([per_head(pv), v], dim=2)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0,
                                         scale=self.scale)
    out = out.transpose(1, 2).reshape(B, N, heads * head_dim)
    norm = getattr(self, "norm", None)
    if norm is not None:
        out = norm(out)
    if gate is not None:
        out = out * gate
    return self.proj_drop(self.proj(out))


class PromptedViT:
    """The insertion points of one ViT and the prompts of the forward pass in progress."""

    def __init__(self, vit: nn.Module) -> None:
        self.vit = vit
        self.depth = len(vit.blocks)
        self.embed_dim = int(getattr(vit, "embed_dim", vit.blocks[0].attn.qkv.in_features))
        self.num_heads = int(vit.blocks[0].attn.num_heads)
        self.n_prefix_tokens = int(getattr(vit, "num_prefix_tokens", 1))
        self.current: PromptInputs | None = None
        self._inserted = 0  # prompt tokens in the sequence of the forward pass in progress
        self._prompt_out: torch.Tensor | None = None
        vit.patch_embed.register_forward_pre_hook(self._start)
        for i, block in enumerate(vit.blocks):
            block.register_forward_pre_hook(functools.partial(self._insert_tokens, i))
            block.attn.cfs_prefix = None
            block.attn.forward = types.MethodType(_prefix_attention, block.attn)
        vit.norm.register_forward_hook(self._keep_prompt_outputs)
        fc_norm = getattr(vit, "fc_norm", None)
        if fc_norm is None:
            raise ValueError("the ViT has no fc_norm (timm applies it after pooling); pool='prompt' needs it")
        fc_norm.register_forward_pre_hook(self._pool)

    # -- hooks -------------------------------------------------------------------------------
    def _start(self, module: nn.Module, args: tuple) -> None:
        self._inserted = 0
        self._prompt_out = None

    def _insert_tokens(self, index: int, module: nn.Module, args: tuple):
        """Before block ``index``: insert its prompt tokens after the prefix tokens, replacing
        the prompt tokens already in the sequence (deep prompts)."""
        cur = self.current
        if cur is None or index not in cur.tokens:
            return None
        x, p = args[0], self.n_prefix_tokens
        tokens = cur.tokens[index].to(x.dtype)
        x = torch.cat([x[:, :p], tokens, x[:, p + self._inserted:]], dim=1)
        self._inserted = tokens.shape[1]
        return (x, *args[1:])

    def _keep_prompt_outputs(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if self.current is not None and self.current.pool == "prompt" and out.dim() == 3:
            p = self.n_prefix_tokens
            self._prompt_out = out[:, p:p + self._inserted]

    def _pool(self, module: nn.Module, args: tuple):
        if self.current is None or self.current.pool != "prompt":
            return None
        if self._prompt_out is None or self._prompt_out.shape[1] == 0:
            raise RuntimeError("pool='prompt' needs prompt tokens in the sequence")
        return (self._prompt_out.mean(dim=1),)

    # -- use ---------------------------------------------------------------------------------
    def check(self, inputs: PromptInputs) -> None:
        """``ValueError`` for a block index outside the ViT or a width that does not fit."""
        if inputs.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {inputs.pool!r}")
        self.check_blocks([*inputs.tokens, *inputs.prefixes], "blocks")
        for i, (k, v) in inputs.prefixes.items():
            if k.shape != v.shape or k.shape[-1] != self.blocks_attn_dim(i):
                raise ValueError(f"prefix of block {i}: keys {tuple(k.shape)} and values {tuple(v.shape)} must "
                                 f"match, width {self.blocks_attn_dim(i)}")
        for i, t in inputs.tokens.items():
            if t.shape[-1] != self.embed_dim:
                raise ValueError(f"prompt tokens of block {i} have width {t.shape[-1]}, the ViT {self.embed_dim}")
        if inputs.pool == "prompt" and not inputs.tokens:
            raise ValueError("pool='prompt' needs prompt tokens")

    def check_blocks(self, blocks: list[int], what: str = "layers") -> None:
        """``ValueError`` naming the block indices of ``blocks`` outside the ViT."""
        bad = sorted({i for i in blocks if not 0 <= i < self.depth})
        if bad:
            raise ValueError(f"{what} {bad} are outside the ViT's {self.depth} blocks")

    def blocks_attn_dim(self, index: int) -> int:
        attn = self.vit.blocks[index].attn
        return int(attn.num_heads * attn.head_dim)

    @contextlib.contextmanager
    def use(self, inputs: PromptInputs) -> Iterator[None]:
        """Forward passes inside the block carry ``inputs``; the ViT is plain again afterwards."""
        self.check(inputs)
        if self.current is not None:
            raise RuntimeError("prompts are already in use on this ViT")
        self.current = inputs
        attns = [self.vit.blocks[i].attn for i in inputs.prefixes]
        try:
            for i, attn in zip(inputs.prefixes, attns):
                attn.cfs_prefix = inputs.prefixes[i]
            yield
        finally:
            for attn in attns:
                attn.cfs_prefix = None
            self.current = None
            self._prompt_out = None


def prompted(module: nn.Module) -> PromptedViT:
    """The :class:`PromptedViT` of the ViT inside ``module``, installed on first use (once per
    ViT: every caller shares the same insertion points)."""
    vit = find_vit(module)
    pv = vit.__dict__.get("_cfs_prompted")
    if pv is None:
        pv = PromptedViT(vit)
        vit.__dict__["_cfs_prompted"] = pv  # a plain attribute: not a submodule, not in state_dict
    return pv
