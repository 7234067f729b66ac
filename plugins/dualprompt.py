"""DualPrompt (Wang et al., ECCV 2022, "DualPrompt: Complementary Prompting for Rehearsal-free
Continual Learning").

A frozen pre-trained ViT with two kinds of prefix-tuned prompts (learnable key and value
prefixes concatenated to the keys and values of a block's self-attention, :mod:`cfs.models.prompts`):

* the **G-prompt** (general, shared by all tasks) at blocks ``g_layers``;
* the **E-prompts** (expert, one per task) at blocks ``e_layers``, kept in a pool addressed by
  task keys (:class:`cfs.prompt_pool.PromptPool`). Training on task ``t`` uses E-prompt ``t``
  (the official ``use_prompt_mask``) and pulls key ``t`` towards the task's queries (the frozen
  ViT's [CLS] feature) with weight ``pull``; at test time each image takes the E-prompt whose key
  is most cosine-similar to its query (task-key matching, top-1).

The classifier reads the [CLS] token (``head_type='token'``); the loss is the cross-entropy over
the current task's classes (``train_mask``). Only the G-prompt, the E-prompts, their keys and
the classifier train. Before task ``t > 0`` E-prompt ``t`` starts as a copy of E-prompt ``t - 1``
(the official ``shared_prompt_pool``; keys are not copied, ``shared_prompt_key`` off).

Defaults, from github:JH-LEE-KR/dualprompt-pytorch ``configs/cifar100_dualprompt.py``:
``g_layers`` [0, 1], ``g_length`` 5, ``e_layers`` [2, 3, 4], ``e_length`` 5, ``pool_size`` 10,
``pull`` 1.0, prefix tuning for both (key and value prefixes of ``length`` tokens each), prompts
and keys uniform in [-1, 1], ``train_mask`` on, ``clip_grad`` 1.0. The official optimisation
belongs to the run: Adam, constant lr 0.03 x 24 / 256 = 0.0028125, batch 24, 5 epochs per task
(``--optimizer adam --lr 0.0028125 --batch-size 24 --epochs 5``).

Departures (stated):

* With more tasks than ``pool_size`` the official code stops forcing the task's E-prompt
  (``prompt_mask=None``) and trains whichever matches best; so does this one.
* The official ``batchwise_prompt`` also applies at test time (every image of a test batch
  takes the E-prompt most of the batch matched); here each test image matches on its own.
* Training queries are the cached features of the un-augmented training images
  (``query=cached``); ``-o dualprompt.query=augmented`` queries each augmented batch, as the
  official code does.
* A block in both ``g_layers`` and ``e_layers`` gets both prefixes, E before G (the layout of
  the CODA-Prompt repository's DualPrompt; the official defaults keep them apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.models.prompts import PromptedViT, PromptInputs
from cfs.prompt_pool import PromptPool
from cfs.prompt_strategy import PromptOptions, PromptStrategy
from cfs.registry import Registry


@dataclass
class DualPromptOptions(PromptOptions):
    """DualPrompt's prompts (defaults: dualprompt-pytorch's CIFAR-100 configuration)."""

    g_layers: list[int] = field(default_factory=lambda: [0, 1])
    g_length: int = 5
    e_layers: list[int] = field(default_factory=lambda: [2, 3, 4])
    e_length: int = 5
    pool_size: int = 10
    pull: float = 1.0
    shared_pool: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool_size < 1 or self.e_length < 1 or (self.g_layers and self.g_length < 1):
            raise ValueError("pool_size and e_length (and g_length with g_layers) must be >= 1")
        if not self.e_layers:
            raise ValueError("e_layers must name at least one block")
        for name in ("g_layers", "e_layers"):
            layers = getattr(self, name)
            if len(set(layers)) != len(layers):
                raise ValueError(f"{name} must be distinct block indices, got {layers}")


class _DualPrompts(nn.Module):
    """The G-prompt ``(g_layers, 2, g_length, D)`` and the E-prompt pool with its task keys."""

    def __init__(self, spec: dict[str, Any], generator: torch.Generator | None) -> None:
        super().__init__()
        d = spec["embed_dim"]
        self.g = nn.Parameter(torch.rand(spec["g_layers"], 2, spec["g_length"], d, generator=generator) * 2 - 1)
        self.e = PromptPool(spec["pool_size"], spec["key_dim"], (spec["e_layers"], 2, spec["e_length"], d),
                            generator=generator)


class DualPrompt(PromptStrategy):
    """DualPrompt: prefix-tuned G-prompt and per-task E-prompts chosen by task-key matching, frozen ViT."""

    name = "dualprompt"
    Options = DualPromptOptions

    def make_spec(self, pv: PromptedViT, state: RunState) -> dict[str, Any]:
        o = self.options
        pv.check_blocks(o.g_layers, "g_layers")
        pv.check_blocks(o.e_layers, "e_layers")
        return {"pool_size": o.pool_size, "key_dim": int(state.model.backbone.out_dim), "embed_dim": pv.embed_dim,
                "g_layers": len(o.g_layers), "g_length": o.g_length, "e_layers": len(o.e_layers),
                "e_length": o.e_length}

    def make_prompts(self, spec: dict[str, Any], generator: torch.Generator | None) -> nn.Module:
        return _DualPrompts(spec, generator)

    @torch.no_grad()
    def start_experience(self, state: RunState) -> None:
        t, pool = self.task, self.prompts.e
        if self.options.shared_pool and 0 < t < pool.size:
            pool.values[t].copy_(pool.values[t - 1])

    def prompt_inputs(self, state: RunState, query: torch.Tensor,
                      train: bool) -> tuple[PromptInputs, torch.Tensor | None]:
        o, b = self.options, query.shape[0]
        forced = None
        if train and 0 <= self.task < self.prompts.e.size:
            forced = torch.full((b, 1), self.task, dtype=torch.long, device=query.device)
        values, _, pull = self.prompts.e.select(query, 1, forced=forced)  # (B, 1, e_layers, 2, L, D)
        prefixes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for j, layer in enumerate(o.e_layers):
            prefixes[layer] = (values[:, 0, j, 0], values[:, 0, j, 1])
        for j, layer in enumerate(o.g_layers):
            gk, gv = (self.prompts.g[j, s].unsqueeze(0).expand(b, -1, -1) for s in (0, 1))
            if layer in prefixes:
                ek, ev = prefixes[layer]
                gk, gv = torch.cat([ek, gk], dim=1), torch.cat([ev, gv], dim=1)
            prefixes[layer] = (gk, gv)
        return PromptInputs(prefixes=prefixes), (o.pull * pull if train and o.pull else None)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(DualPrompt)
