"""Experience replay with a class-balanced exemplar memory (PyCIL's ``replay``, METHODS.md 11.4).

After each experience the memory keeps ``budget // n_seen`` exemplars per class (herding, or a
uniform "reservoir" sample) and old classes shrink as classes arrive. ``mode="concat"``
(default, PyCIL's offline replay) trains each experience on its data plus the memory;
``mode="batch"`` (online ER, mammoth) appends a same-size batch drawn from the memory to
every training batch instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.memory import ClassBalancedMemory, store_experience
from cfs.registry import Registry
from cfs.strategy import Strategy

MODES = ("concat", "batch")


@dataclass
class ReplayOptions:
    budget: int = 2000
    per_class: int | None = None
    selection: str = "herding"
    mode: str = "concat"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")


class Replay(Strategy):
    """Rehearsal of a class-balanced exemplar memory (budget 2000, herding)."""

    name = "replay"
    compatibility = frozenset({"class-incremental"})
    Options = ReplayOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.memory = ClassBalancedMemory(o.budget, o.per_class, o.selection)

    @hookimpl
    def cfs_before_training_exp(self, state: RunState) -> None:
        if self.options.mode == "concat":
            state.join_train_data(self.memory.dataset())

    @hookimpl
    def cfs_before_batch(self, state: RunState) -> None:
        if self.options.mode != "batch" or not len(self.memory):
            return
        stored = self.memory.dataset()
        n = state.batch.n_drawn
        dev = state.generator.device
        idx = torch.randint(len(stored), (n,), generator=state.generator, device=dev).to(stored.y.device)
        state.batch.append_replayed(state.prepare(stored.x[idx], train=True), stored.y[idx], source=self.name)

    @hookimpl
    def cfs_after_training_exp(self, state: RunState) -> None:
        store_experience(self.memory, state)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Replay)
