"""DER++ (Buzzega et al., NeurIPS 2020; METHODS.md 11.5).

A reservoir buffer of (x, y, z), z the logits when x was inserted. Loss on a batch:
``CE(f(x_t), y_t) + alpha ||f(x') - z'||^2 + beta CE(f(x''), y'')`` with (x', z') and
(x'', y'') two independent buffer samples of ``minibatch`` examples (default: the batch size).
``beta=0`` is plain DER. Defaults: buffer 500; alpha and beta, unless given, are mammoth's
seq-CIFAR-10 best values for the tabulated buffer size nearest (log scale) to ``buffer``:
200 -> (0.1, 0.5), 500 -> (0.2, 0.5), 5120 -> (0.1, 1.0) (METHODS.md 11.5).

``head="full"`` (default, the paper's setting): the head has an output for every class of the
scenario from the start, as mammoth's fixed head does, and the cross-entropy of the current
batch covers all of them. The stored z then include the (pushed-down) logits of classes not
yet seen, and matching them keeps old samples from drifting towards later classes; this is
much of DER's class-incremental advantage over plain replay. ``head="grow"`` keeps the
engine's growing head; a stored z then covers the classes seen when it was stored and only
those columns are matched.

As in mammoth, the buffer keeps the raw (non-augmented) images, read from the experience's
data through ``state.batch.incoming_index`` (uint8 where the data set is uint8), and replays them
through the training augmentation (``augment_replay=False``: only normalised); z is the logit
of the augmented view that was trained on. Storing the augmented view instead and
re-augmenting it would crop a crop (shifts twice the padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.memory import ReservoirBuffer, offer_incoming
from cfs.registry import Registry
from cfs.strategy import Strategy


HEAD_MODES = ("full", "grow")
#: mammoth's seq-CIFAR-10 best (alpha, beta) by buffer size
BEST_ARGS = {200: (0.1, 0.5), 500: (0.2, 0.5), 5120: (0.1, 1.0)}


def default_weights(buffer: int) -> tuple[float, float]:
    """(alpha, beta) tuned for the tabulated buffer size nearest to ``buffer`` on a log scale."""
    nearest = min(BEST_ARGS, key=lambda size: abs(math.log(size / max(buffer, 1))))
    return BEST_ARGS[nearest]


@dataclass
class DERppOptions:
    buffer: int = 500
    #: None: by buffer size (see default_weights)
    alpha: float | None = None
    beta: float | None = None
    minibatch: int | None = None
    #: re-augment replayed raw images (mammoth applies the training transform on replay)
    augment_replay: bool = True
    head: str = "full"

    def __post_init__(self) -> None:
        alpha, beta = default_weights(self.buffer)
        self.alpha = alpha if self.alpha is None else self.alpha
        self.beta = beta if self.beta is None else self.beta
        if self.head not in HEAD_MODES:
            raise ValueError(f"head must be one of {', '.join(HEAD_MODES)}, not {self.head!r}")


def masked_logit_mse(out: torch.Tensor, stored: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the stored columns of each row (``widths[i]`` of them)."""
    k = min(out.shape[1], stored.shape[1])
    cols = torch.arange(k, device=out.device).unsqueeze(0)
    mask = (cols < widths.unsqueeze(1)).float()
    return ((out[:, :k].float() - stored[:, :k]).pow(2) * mask).sum() / mask.sum().clamp(min=1)


class DERpp(Strategy):
    """Dark Experience Replay++: replay logits (alpha) and labels (beta) from a reservoir."""

    name = "derpp"
    compatibility = frozenset({"class-incremental"})
    Options = DERppOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.buffer = ReservoirBuffer(self.options.buffer)

    def _replayed(self, state: RunState, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.buffer.sample(n, state.generator)
        return idx, state.prepare(self.buffer.x[idx], train=self.options.augment_replay)

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        head = state.model.head
        if self.options.head == "full" and hasattr(head, "expand"):
            head.expand(state.scenario.num_classes - head.out_features)

    @hookimpl
    def cfs_loss(self, state: RunState) -> torch.Tensor | None:
        if not len(self.buffer):
            return None
        o = self.options
        n = o.minibatch or state.config.batch_size
        loss = state.outputs.new_zeros((), dtype=torch.float32)
        if o.alpha:
            idx, x = self._replayed(state, n)
            loss = loss + o.alpha * masked_logit_mse(state.model(x), self.buffer.logits[idx], self.buffer.widths[idx])
        if o.beta:
            idx, x = self._replayed(state, n)
            out = state.model(x)
            out = out if o.head == "full" else out[:, : state.n_seen]
            loss = loss + o.beta * F.cross_entropy(out.float(), self.buffer.y[idx])
        return loss

    @hookimpl
    def cfs_after_batch(self, state: RunState) -> None:
        if state.outputs is None:
            return
        offer_incoming(self.buffer, state, state.outputs)  # incoming rows only, raw, with their logits

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(DERpp)
