"""CODA-Prompt (Smith et al., CVPR 2023, "CODA-Prompt: COntinual Decomposed Attention-based
Prompting for Rehearsal-Free Continual Learning").

A frozen pre-trained ViT; at each prompted block ``l`` a bank of ``pool_size`` prompt
components ``P_m`` (``length x D``) with keys ``K_m`` and attention vectors ``A_m`` (width of
the query). For an image with query ``q`` (the frozen ViT's [CLS] feature) the prompt is the
weighted sum ``p = sum_m alpha_m P_m`` with ``alpha_m = cos(q * A_m, K_m)`` (``*``: element-wise;
the attention re-weights the query's features before the cosine with the key). Its first
``length / 2`` rows are prefixed to the block's attention keys, the rest to its values (prefix
tuning, :mod:`cfs.models.prompts`). The classifier reads the [CLS] token; the loss is the
cross-entropy over the current task's classes (``train_mask``) plus, with ``ortho > 0``, the
orthogonality penalty ``ortho * (||K K^T - I||^2 + ||A A^T - I||^2 + ||P P^T - I||^2)``
(means over the entries; ``P`` flattened per component) on the components in use.

Components per task (github:GT-RIPL/CODA-Prompt ``models/zoo.py``): the bank is split into
``n_tasks`` equal parts of ``pool_size // n_tasks`` components; task ``t`` trains part ``t`` and
uses parts ``0..t-1`` frozen (they enter the sum detached); evaluation uses parts ``0..t``. Before
task ``t`` trains, part ``t`` of ``K``, ``A`` and ``P`` is re-initialised orthonormal to the
earlier components (the official Gram-Schmidt step). ``n_tasks`` is the scenario's number of
experiences.

Defaults (official ``experiments/cifar-100.sh`` ``--prompt_param 100 8 0.0`` and
``configs/cifar-100_prompt.yaml``; LAMDA-PILOT's ``exps/coda_prompt.json`` agrees):
``pool_size`` 100, ``length`` 8, ``layers`` [0, 1, 2, 3, 4], ``ortho`` 0.0 (the official script
notes that with the per-task Gram-Schmidt initialisation the penalty "now can be 0"),
``train_mask`` on, ``clip_grad`` 0 (no clipping, as the official learner). The official
optimisation belongs to the run: Adam, lr 0.001, cosine schedule, batch 128, 20 epochs per
task, weight decay 0 (``--optimizer adam --lr 0.001 --schedule cosine --batch-size 128
--epochs 20``).

Departures (stated):

* The Gram-Schmidt step draws the new components at random and orthonormalises them against the
  span of *all* earlier components at once (a QR factorisation); the official loop subtracts the
  projection on each earlier component separately, which is the same when those are mutually
  orthogonal (they start so, training moves them). A bank larger than the query width or than
  ``length x D`` cannot be orthonormal and is refused.
* Training queries are the cached features of the un-augmented training images
  (``query=cached``); ``-o coda-prompt.query=augmented`` queries each augmented batch.
* The bank is not scaled for a tiny ViT by default: 100 components need a query width of at
  least 100 (``vit-tiny``'s 192 is enough); the tests use smaller banks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.models.prompts import PromptedViT, PromptInputs
from cfs.prompt_strategy import PromptOptions, PromptStrategy
from cfs.registry import Registry


def ortho_penalty(t: torch.Tensor) -> torch.Tensor:
    """``mean((t t^T - I)^2)`` over the rows of ``t`` (flattened per row)."""
    t = t.flatten(1)
    return ((t @ t.T - torch.eye(t.shape[0], device=t.device, dtype=t.dtype)) ** 2).mean()


def orthonormal_rows(earlier: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` random unit rows orthogonal to each other and to the span of ``earlier`` (rows)."""
    n = earlier.shape[1]
    if earlier.shape[0] + count > n:
        raise ValueError(f"cannot draw {count} rows orthogonal to {earlier.shape[0]} others in {n} dimensions")
    fresh = torch.randn(count, n, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.cat([earlier.detach().cpu().double(), fresh]).T)
    return q[:, earlier.shape[0]:].T.to(earlier.dtype)


@dataclass
class CodaPromptOptions(PromptOptions):
    """CODA-Prompt's component bank (defaults: the official CIFAR-100 script)."""

    pool_size: int = 100
    length: int = 8
    layers: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    ortho: float = 0.0
    clip_grad: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool_size < 1 or self.length < 2 or self.length % 2:
            raise ValueError(f"need pool_size >= 1 and an even length >= 2 (half keys, half values), got "
                             f"pool_size {self.pool_size}, length {self.length}")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be distinct block indices, got {self.layers}")
        if self.ortho < 0:
            raise ValueError(f"ortho must be >= 0, got {self.ortho}")


class _Components(nn.Module):
    """Per prompted block: components ``P`` (pool, length, D), keys ``K`` and attention ``A`` (pool, query width)."""

    def __init__(self, spec: dict[str, Any], generator: torch.Generator | None) -> None:
        super().__init__()
        pool, width = spec["pool_size"], spec["key_dim"]

        def uniform(*shape: int) -> nn.Parameter:  # the official tensor_prompt: uniform in [0, 1)
            return nn.Parameter(torch.rand(*shape, generator=generator))

        self.P = nn.ParameterList([uniform(pool, spec["length"], spec["embed_dim"]) for _ in range(spec["layers"])])
        self.K = nn.ParameterList([uniform(pool, width) for _ in range(spec["layers"])])
        self.A = nn.ParameterList([uniform(pool, width) for _ in range(spec["layers"])])


class CodaPrompt(PromptStrategy):
    """CODA-Prompt: attention-weighted prompt components (frozen per task), orthogonal init, frozen ViT."""

    name = "coda-prompt"
    Options = CodaPromptOptions

    def make_spec(self, pv: PromptedViT, state: RunState) -> dict[str, Any]:
        o = self.options
        pv.check_blocks(o.layers, "layers")
        n_tasks = len(state.scenario.experiences)
        width = int(state.model.backbone.out_dim)
        if o.pool_size < n_tasks:
            raise ValueError(f"pool_size {o.pool_size} gives no component to some of the {n_tasks} tasks")
        if o.pool_size > min(width, o.length * pv.embed_dim):
            raise ValueError(f"pool_size {o.pool_size} exceeds the query width {width} (or length x width "
                             f"{o.length * pv.embed_dim}): the components cannot be orthonormal; lower it")
        return {"pool_size": o.pool_size, "per_task": o.pool_size // n_tasks, "key_dim": width,
                "embed_dim": pv.embed_dim, "length": o.length, "layers": len(o.layers)}

    def make_prompts(self, spec: dict[str, Any], generator: torch.Generator | None) -> nn.Module:
        return _Components(spec, generator)

    def _part(self, task: int) -> tuple[int, int]:
        pt = self.spec["per_task"]
        return task * pt, (task + 1) * pt

    @torch.no_grad()
    def start_experience(self, state: RunState) -> None:
        s, f = self._part(self.task)
        if f > self.spec["pool_size"]:
            raise RuntimeError(f"coda-prompt: task {self.task} has no components left (pool {self.spec['pool_size']})")
        c = self.prompts
        for group in (c.P, c.K, c.A):
            for p in group:
                flat = p.view(p.shape[0], -1)
                flat[s:f] = orthonormal_rows(flat[:s], f - s, state.generator).to(p.device)

    def _used(self, p: torch.Tensor, train: bool) -> torch.Tensor:
        s, f = self._part(max(self.task, 0))
        if not train:
            return p[:f]
        return torch.cat([p[:s].detach(), p[s:f]])

    def prompt_inputs(self, state: RunState, query: torch.Tensor,
                      train: bool) -> tuple[PromptInputs, torch.Tensor | None]:
        o, c = self.options, self.prompts
        half = o.length // 2
        prefixes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        penalty = None
        for j, layer in enumerate(o.layers):
            K, A, P = (self._used(t[j], train) for t in (c.K, c.A, c.P))
            attended = F.normalize(query.unsqueeze(1) * A.unsqueeze(0), dim=2)  # (B, k, d)
            alpha = torch.einsum("bkd,kd->bk", attended, F.normalize(K, dim=1))
            prompt = torch.einsum("bk,kld->bld", alpha, P)
            prefixes[layer] = (prompt[:, :half], prompt[:, half:])
            if train and o.ortho > 0:
                term = ortho_penalty(K) + ortho_penalty(A) + ortho_penalty(P)
                penalty = o.ortho * term if penalty is None else penalty + o.ortho * term
        return PromptInputs(prefixes=prefixes), penalty


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(CodaPrompt)
