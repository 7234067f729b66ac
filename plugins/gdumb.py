"""GDumb (Prabhu, Torr & Dokania, "GDumb: A Simple Approach that Questions Our Progress in
Continual Learning", ECCV 2020).

A **g**reedy class-balanced sampler and a **dumb** learner: the sampler
(:class:`cfs.greedy_memory.GreedyBalancedMemory`) stores samples while there is room and, once
full, lets a sample of a class holding fewer than ``k / |Y|`` samples (``k`` the memory size,
``Y`` the classes seen) replace a random sample of the largest class. Before it is evaluated
the learner is trained **from scratch on the memory only**; the stream itself is never
trained on.

Here, per experience (``cfs_before_training_exp``): the experience's own training data is
offered to the memory in a seeded random order, the model is reset to the run's initial
weights (:class:`cfs.models.reset.InitialWeights`; the head's rows for classes added since are
freshly initialised), and the experience trains on the memory instead of its data
(``state.replace_train_data``), so the engine's epochs, optimizer and schedule and every
composed strategy's hooks apply (``gdumb+lwf`` distils the previous memory-trained model).

Defaults: ``buffer=500`` (the memory ``k``; the paper's split CIFAR-10 table reports
k = 200, 500 and 1000, see ``scripts/replicate.sh`` of the authors' code).

Departures from the paper and its code:

* the learner is retrained after every experience (the accuracy matrix needs a model per
  experience), the paper's "train from scratch at inference time"; mammoth trains it once
  after the last task;
* the run's optimizer, epochs, batch size and augmentation are used instead of the paper's SGD
  with cosine warm restarts, 256 passes, CutMix and gradient clipping at 10;
* the released code picks the first ``k / n_classes`` samples of every class offline; this is
  the paper's online rule (same class-balanced end state, no class count up front);
* the memory's rows count as replayed rows (``replace_train_data``), so the epoch's training
  accuracy, measured on incoming rows only, is ``nan`` (not measured).

Online (the ``online`` kind, ``state.extra["online"]``): the paper's setting. The sampler takes
the stream's incoming samples batch by batch (``cfs_after_batch``, in stream order); the stream
itself is never trained on (``cfs_training_step`` answers a zero loss, no update); before every
evaluation point whose memory changed since the last one (``cfs_before_eval``) the learner is
reset to the initial weights and trained on the memory alone for ``online_epochs`` passes of
``online_batch`` samples with the run's optimizer settings (``cfs.engine.optim``), plain
cross-entropy. Defaults: 30 passes of 16 (the paper's batch size; its 256 passes with cosine
warm restarts, CutMix and clipping at 10 are too slow for an anytime evaluation every few
hundred samples on a CPU). This inner fit runs no other strategy's hooks: online GDumb does
not compose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.data.arrays import ArrayDataset
from cfs.engine.optim import build_optimizer
from cfs.engine.state import RunState
from cfs.greedy_memory import GreedyBalancedMemory
from cfs.models.reset import InitialWeights
from cfs.registry import Registry
from cfs.strategy import Strategy


@dataclass
class GDumbOptions:
    buffer: int = 500
    #: online runs: passes over the memory before each evaluation point, and their batch size
    online_epochs: int = 30
    online_batch: int = 16

    def __post_init__(self) -> None:
        if self.buffer < 1:
            raise ValueError(f"buffer must be at least 1, got {self.buffer}")
        if self.online_epochs < 1 or self.online_batch < 1:
            raise ValueError(f"online_epochs and online_batch must be at least 1, got "
                             f"{self.online_epochs} and {self.online_batch}")


class GDumb(Strategy):
    """GDumb: retrain from scratch on a greedy class-balanced memory (buffer 500)."""

    name = "gdumb"
    compatibility = frozenset({"class-incremental", "online"})
    Options = GDumbOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.memory = GreedyBalancedMemory(self.options.buffer)
        self.initial: InitialWeights | None = None
        self.changed = False  # online: the memory took samples since the learner was last fitted

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        if self.initial is None:  # initial weights restored with load_state_dict are kept
            self.initial = InitialWeights(state.model)

    @hookimpl
    def cfs_before_training_exp(self, state: RunState) -> None:
        if "online" in state.extra:
            return  # online: the sampler takes the stream batch by batch (cfs_after_batch)
        self.memory.update(state.experience.train.to(state.device), generator=state.generator)
        self.initial.restore(state.model)
        state.replace_train_data(self.memory.dataset())

    @hookimpl
    def cfs_training_step(self, state: RunState) -> torch.Tensor | None:
        """Online: the stream is only sampled, never trained on (no update)."""
        return torch.zeros((), device=state.device) if "online" in state.extra else None

    @hookimpl
    def cfs_after_batch(self, state: RunState) -> None:
        if "online" not in state.extra:
            return
        batch = state.batch
        rows = batch.incoming_index
        if len(rows):
            self.memory.update(ArrayDataset(state.train_data.x[rows], batch.y[batch.incoming]),
                               generator=state.generator, shuffle=False)
            self.changed = True

    @hookimpl
    def cfs_before_eval(self, state: RunState) -> None:
        """Online: refit the learner from scratch on the memory if it changed."""
        if "online" not in state.extra or not self.changed or not len(self.memory):
            return
        self.changed = False
        self.initial.restore(state.model)
        with torch.enable_grad():  # evaluation runs under no_grad
            fit_memory(state, self.memory.dataset().to(state.device), self.options.online_epochs,
                       self.options.online_batch)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(),
                "initial": None if self.initial is None else self.initial.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        initial = state.get("initial")
        self.initial = None if initial is None else InitialWeights.from_state_dict(initial)


def fit_memory(state: RunState, memory: ArrayDataset, epochs: int, batch_size: int) -> None:
    """Train ``state.model`` on ``memory`` alone: ``epochs`` shuffled passes, cross-entropy over
    the head's classes, a fresh optimizer of the run's settings (GDumb's dumb learner)."""
    model = state.model
    optimizer = build_optimizer(state.config, list(model.parameters()))
    model.train()
    dev = state.generator.device
    for _ in range(epochs):
        order = torch.randperm(len(memory), generator=state.generator, device=dev).to(memory.y.device)
        for start in range(0, len(memory), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(state.prepare(memory.x[idx], train=True)), memory.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(GDumb)
