"""L2P (Wang et al., CVPR 2022, "Learning to Prompt for Continual Learning").

A frozen pre-trained ViT; a pool of ``pool_size`` prompts, each ``length`` tokens wide, with a
learnable key each. For an image, the query is the frozen ViT's [CLS] feature; the ``top_n``
prompts whose keys are most cosine-similar to it are prepended to the token sequence (after
the [CLS] token, before block 0), the classifier reads the mean of the prompt tokens' outputs
(``head_type='prompt'``), and the loss is the cross-entropy over the current experience's
classes (``train_mask``) minus ``pull`` times the summed query-key similarity of the selected
keys per image (the surrogate loss that pulls keys towards their queries). Only prompts, keys
and the classifier train. Key matching, top-N selection and the surrogate loss are the core's
:mod:`cfs.prompt_pool`; the prompt insertion is :mod:`cfs.models.prompts`; the frozen queries,
masked cross-entropy, gradient clipping and prompted prediction are
:class:`cfs.prompt_strategy.PromptStrategy`.

Defaults, from github:JH-LEE-KR/l2p-pytorch ``configs/cifar100_l2p.py`` (the PyTorch port the
L2P authors link): ``pool_size`` 10, ``length`` 5, ``top_n`` 5, keys and prompts uniform in
[-1, 1], ``pull`` 0.1, ``batchwise`` on, ``head`` prompt, ``train_mask`` on, ``clip_grad`` 1.0,
shallow prompts (``layers`` [0]; [0, 1, 2, 3, 4] is the deep "L2P++" of the CODA-Prompt repo).
The official optimisation is not an option of the strategy but of the run: Adam, constant lr
0.03 x batch / 256 (0.001875 at batch 16), 5 epochs per task, optimizer rebuilt per task
(``--optimizer adam --lr 0.001875 --batch-size 16 --epochs 5``).

Departures (stated):

* ``batchwise`` selection (every image of a batch uses the prompts chosen most often in it)
  applies to training only; at evaluation each image uses its own top-N, so a test prediction
  does not depend on the other images of its batch (the official code applies it to test
  batches too). Ties in the batch vote go to the lower prompt index.
* Training queries are the cached features of the un-augmented training images
  (``query=cached``, one frozen forward per image per experience instead of one per step);
  ``-o l2p.query=augmented`` queries each augmented batch, as the official code does.
* Prompt tokens carry no position embedding (l2p-pytorch gives them the [CLS] one, a constant
  shift of a freely learnt token).
* Pool size, length and top-N keep the official values whatever the ViT. On a small image
  they weigh far more than on ViT-B/16 at 224 px, where the 25 prompt tokens are 11% of a
  222-token sequence: with 64 patch tokens (``vit-tiny`` at 32 px) they are 28%, with 16
  (``vit-tiny-p8``) 60%, and the prompt-pooled feature is then mostly the prompts'. The
  ViT benchmark (``benchmarks/reproduce/vit_cil.py``) therefore runs ``-o l2p.length=1``
  on ``vit-tiny-p8`` (5 tokens, 23%), and says so (it also queries the augmented batches,
  ``-o l2p.query=augmented``, as the official code).
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

HEADS = ("prompt", "token")


@dataclass
class L2POptions(PromptOptions):
    """L2P's pool and loss (defaults: l2p-pytorch's CIFAR-100 configuration)."""

    pool_size: int = 10
    length: int = 5
    top_n: int = 5
    pull: float = 0.1
    batchwise: bool = True
    head: str = "prompt"
    layers: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool_size < 1 or self.length < 1 or not 1 <= self.top_n <= self.pool_size:
            raise ValueError(f"need pool_size >= 1, length >= 1 and 1 <= top_n <= pool_size, got pool_size "
                             f"{self.pool_size}, length {self.length}, top_n {self.top_n}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be distinct block indices, got {self.layers}")


class L2P(PromptStrategy):
    """L2P: a pool of prompts picked by query-key matching (top-N), surrogate pull loss, frozen ViT."""

    name = "l2p"
    Options = L2POptions

    def make_spec(self, pv: PromptedViT, state: RunState) -> dict[str, Any]:
        o = self.options
        pv.check_blocks(o.layers, "layers")
        return {"pool_size": o.pool_size, "key_dim": int(state.model.backbone.out_dim),
                "layers": len(o.layers), "length": o.length, "embed_dim": pv.embed_dim}

    def make_prompts(self, spec: dict[str, Any], generator: torch.Generator | None) -> nn.Module:
        return PromptPool(spec["pool_size"], spec["key_dim"], (spec["layers"], spec["length"], spec["embed_dim"]),
                          generator=generator)

    def prompt_inputs(self, state: RunState, query: torch.Tensor,
                      train: bool) -> tuple[PromptInputs, torch.Tensor | None]:
        o = self.options
        values, _, pull = self.prompts.select(query, o.top_n, batchwise=train and o.batchwise)
        b, n, _, length, dim = values.shape
        tokens = {layer: values[:, :, j].reshape(b, n * length, dim) for j, layer in enumerate(o.layers)}
        inputs = PromptInputs(tokens=tokens, pool="prompt" if o.head == "prompt" else "model")
        return inputs, (o.pull * pull if train and o.pull else None)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(L2P)
