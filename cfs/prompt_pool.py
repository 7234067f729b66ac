"""A pool of prompts addressed by learnable keys: the selection mechanism of L2P and DualPrompt.

L2P (Wang et al., CVPR 2022) and DualPrompt (Wang et al., ECCV 2022) share one mechanism
(github:JH-LEE-KR/l2p-pytorch and dualprompt-pytorch, ``prompt.py``), kept here once:

* every pool entry ``j`` has a key ``k_j`` (width of the query) and a prompt value of any
  shape (L2P: tokens ``(L, D)``; DualPrompt: key/value prefixes per layer);
* the query ``q(x)`` is the [CLS] feature of the frozen, un-prompted ViT; the match of image
  ``x`` with entry ``j`` is the cosine ``gamma(q, k_j)`` (both L2-normalised with
  ``x * rsqrt(max(sum x^2, 1e-12))``, as the official ``l2_normalize``);
* the ``top_n`` best-matching entries are used (:func:`top_n`); with ``batchwise`` the whole
  batch uses the ``top_n`` entries chosen most often in it (official ``batchwise_prompt``);
  DualPrompt's training forces the current task's entry instead (``forced``);
* the surrogate loss pulls the selected keys towards the queries:
  ``pull = -sum_{i, j in sel(i)} gamma(q_i, k_j) / B`` (the official ``loss - coeff *
  reduce_sim``; :func:`pull_loss`).

Keys and values start uniform in ``[-1, 1]`` (official ``prompt_key_init``/``prompt_init``
``'uniform'``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def l2_normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(||x||, sqrt(eps))`` along ``dim`` (the official normalisation)."""
    return x * torch.rsqrt(torch.clamp((x * x).sum(dim=dim, keepdim=True), min=eps))


def cosine_similarity(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``(B, M)`` cosine similarities of ``query`` ``(B, D)`` with ``keys`` ``(M, D)``."""
    return l2_normalize(query) @ l2_normalize(keys).T


def top_n(similarity: torch.Tensor, n: int, batchwise: bool = False) -> torch.Tensor:
    """``(B, n)`` indices of the ``n`` most similar entries per row.

    ``batchwise``: every row gets the ``n`` entries that appear most often among the rows'
    own top-``n`` (ties go to the lower index, which the official ``torch.topk`` over unique
    ids leaves unspecified)."""
    b, m = similarity.shape
    if not 1 <= n <= m:
        raise ValueError(f"cannot select {n} of {m} prompts")
    idx = similarity.topk(n, dim=1).indices
    if not batchwise:
        return idx
    counts = torch.bincount(idx.flatten(), minlength=m)
    score = counts * (m + 1) - torch.arange(m, device=counts.device)  # count first, then lower index
    return score.topk(n).indices.unsqueeze(0).expand(b, n)


def pull_loss(similarity: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``-sum`` of the selected entries' similarities over the batch, divided by its size."""
    return -similarity.gather(1, idx).sum() / similarity.shape[0]


class PromptPool(nn.Module):
    """``size`` keys of width ``key_dim`` and ``size`` prompt values of shape ``value_shape``."""

    def __init__(self, size: int, key_dim: int, value_shape: Sequence[int], generator: torch.Generator | None = None):
        super().__init__()
        if size < 1:
            raise ValueError(f"the pool needs at least one prompt, got size {size}")
        self.keys = nn.Parameter(torch.rand(size, key_dim, generator=generator) * 2 - 1)
        self.values = nn.Parameter(torch.rand(size, *value_shape, generator=generator) * 2 - 1)

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def similarity(self, query: torch.Tensor) -> torch.Tensor:
        return cosine_similarity(query, self.keys)

    def select(self, query: torch.Tensor, n: int, batchwise: bool = False,
               forced: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(values (B, n, *value_shape), idx (B, n), pull loss)`` for ``query`` ``(B, D)``;
        ``forced`` ``(B, n)`` replaces the matching (DualPrompt's task-id training)."""
        sim = self.similarity(query)
        idx = forced if forced is not None else top_n(sim, n, batchwise)
        return self.values[idx], idx, pull_loss(sim, idx)
