"""Joint training: at every step, train on the union of all data seen so far.

The upper bound of class-incremental learning (Avalanche's ``Cumulative``): it trains on all
previous experiences' data again, so it does not forget. ``reset=True`` re-initialises the
model before each step (a fresh joint model per step); the default continues from the
current weights, which reaches the same accuracy in fewer epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cfs import hookimpl
from cfs.data.arrays import ArrayDataset
from cfs.engine.state import RunState
from cfs.models.reset import InitialWeights
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
        self._initial: InitialWeights | None = None

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        if self.options.reset:
            self._initial = InitialWeights(state.model)

    @hookimpl
    def cfs_before_training_exp(self, state: RunState) -> None:
        if self.seen:  # earlier experiences' data, joined as replayed rows
            state.join_train_data(ArrayDataset.concat(self.seen))
        self.seen.append(state.experience.train)
        if self.options.reset and self._initial is not None:
            self._initial.restore(state.model)  # the run's initial weights; new head rows re-drawn

    def state_dict(self) -> dict[str, Any]:
        return {"seen": [(d.x.cpu(), d.y.cpu()) for d in self.seen]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = [ArrayDataset(x, y) for x, y in state["seen"]]


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Joint)
