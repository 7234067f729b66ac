"""Joint training: at every step, train on the union of all data seen so far.

The upper bound of class-incremental learning (Avalanche's ``Cumulative``): it trains on all
previous experiences' data again, so it does not forget. ``reset=True`` re-initialises the
model before each step (a fresh joint model per step); the default continues from the
current weights, which reaches the same accuracy in fewer epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cfs import hookimpl
from cfs.data.arrays import ArrayDataset
from cfs.engine.state import RunState
from cfs.registry import Registry
from cfs.strategy import Strategy


@dataclass
class JointOptions:
    reset: bool = False


class Joint(Strategy):
    """One model trained on all data seen so far (upper bound: no forgetting)."""

    name = "joint"
    compatibility = frozenset({"class-incremental"})
    Options = JointOptions
    bench_default = True

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.seen: list[ArrayDataset] = []
        self._init_state: dict[str, torch.Tensor] | None = None

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        self._init_state = {k: v.clone() for k, v in state.model.backbone.state_dict().items()}

    @hookimpl
    def cfs_before_training_exp(self, state: RunState) -> None:
        if self.seen:  # earlier experiences' data, joined as replayed rows
            state.join_train_data(ArrayDataset.concat(self.seen))
        self.seen.append(state.experience.train)
        if self.options.reset and self._init_state is not None:
            state.model.backbone.load_state_dict(self._init_state)
            head = state.model.head
            torch.nn.init.kaiming_uniform_(head.weight.data, a=5**0.5)
            if getattr(head, "bias", None) is not None:
                head.bias.data.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {"seen": [(d.x.cpu(), d.y.cpu()) for d in self.seen]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = [ArrayDataset(x, y) for x, y in state["seen"]]


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Joint)
