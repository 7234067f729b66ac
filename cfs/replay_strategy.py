"""The shared base of online rehearsal strategies (ER, ER-ACE, MIR): a reservoir buffer of
the incoming samples and a replayed batch appended to every training batch.

The buffer (:class:`cfs.memory.ReservoirBuffer`) takes the **incoming** rows of every batch,
raw, after the optimizer step (``cfs_after_batch``); once it is not empty every batch gets
``minibatch`` buffer samples (default: the run's batch size) appended as replayed rows
(``cfs_before_batch``), drawn by :meth:`ReservoirReplayStrategy.retrieve`: uniformly without
replacement here, a subclass may choose otherwise (MIR). No task boundary is used, so these
strategies run with hidden boundaries in the ``online`` kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.memory import ReservoirBuffer, offer_incoming
from cfs.strategy import Strategy


@dataclass
class ReservoirReplayOptions:
    buffer: int = 500
    #: replayed samples appended to every batch; None: the run's batch size
    minibatch: int | None = None

    def __post_init__(self) -> None:
        if self.buffer < 1:
            raise ValueError(f"buffer must be at least 1, got {self.buffer}")
        if self.minibatch is not None and self.minibatch < 1:
            raise ValueError(f"minibatch must be at least 1, got {self.minibatch}")


class ReservoirReplayStrategy(Strategy):
    """Base class: reservoir of incoming samples, a replayed batch appended every step."""

    compatibility = frozenset({"class-incremental", "online"})
    Options = ReservoirReplayOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.buffer = ReservoirBuffer(self.options.buffer)

    def replay_size(self, state: RunState) -> int:
        return self.options.minibatch or state.config.batch_size

    def retrieve(self, state: RunState) -> torch.Tensor:
        """Buffer indices to replay with this batch: ``replay_size`` drawn uniformly."""
        return self.buffer.sample(self.replay_size(state), state.generator)

    @hookimpl
    def cfs_before_batch(self, state: RunState) -> None:
        if not len(self.buffer):
            return
        idx = self.retrieve(state)
        state.batch.append_replayed(state.prepare(self.buffer.x[idx], train=True), self.buffer.y[idx],
                                    source=self.name)

    @hookimpl
    def cfs_after_batch(self, state: RunState) -> None:
        offer_incoming(self.buffer, state)  # only incoming samples enter the reservoir, raw

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
