"""The run state every hook receives: one object, attributes documented here."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from cfs.config import RunConfig
from cfs.data.arrays import ArrayDataset
from cfs.engine.batch import Batch
from cfs.scenarios.base import Experience, Scenario


@dataclass
class EvalResults:
    """Accuracy matrix rows so far plus the initial (untrained) row and the latest predictions."""

    initial: list[float] = field(default_factory=list)
    initial_losses: list[float] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)
    test_sizes: list[int] = field(default_factory=list)
    last_targets: torch.Tensor | None = None
    last_predictions: torch.Tensor | None = None


@dataclass
class RunState:
    """Shared state of one run.

    Stable across the run: ``config``, ``scenario``, ``model``, ``device``, ``strategies``,
    ``hooks`` (the pluggy hook relay), ``transform``, ``generator`` (seeded, for shuffling and
    augmentation), ``results``.
    Per experience: ``experience``, ``train_data`` (the experience's own rows first, then any
    rows joined from a memory with :meth:`join_train_data`), ``n_incoming_rows`` (how many of
    ``train_data``'s first rows are the experience's own), ``optimizer``, ``scheduler``,
    ``n_seen`` (classes seen so far, including this experience's).
    Per batch: ``epoch``, ``iteration``, ``batch`` (a :class:`cfs.engine.batch.Batch`: rows
    augmented and normalised, with their provenance; ``x, y = state.batch`` unpacks it),
    ``features``, ``outputs`` (logits of every row of ``batch``), ``loss``.
    """

    config: RunConfig
    scenario: Scenario
    model: torch.nn.Module
    device: torch.device
    hooks: Any
    strategies: list[Any]
    transform: Any
    generator: torch.Generator
    results: EvalResults = field(default_factory=EvalResults)
    experience: Experience | None = None
    train_data: ArrayDataset | None = None
    n_incoming_rows: int = 0
    n_seen: int = 0
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    epoch: int = 0
    iteration: int = 0
    #: 0-based index of the current batch within its epoch
    step_in_epoch: int = 0
    batch: Batch | None = None
    features: torch.Tensor | None = None
    outputs: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: a cfs.engine.checkpoint.Checkpointer when the run writes checkpoints
    checkpointer: Any = None
    #: the checkpoint this run continues from (``cfs bench --resume``)
    resume: dict[str, Any] | None = None
    memory_format: torch.memory_format = torch.contiguous_format
    #: this process's augmentation draws in a distributed run (seeded by the run seed and the
    #: rank), used while a loop trains on this rank's share (:meth:`sharded`), so ranks neither
    #: repeat each other's draws nor make ``generator`` drift apart; ``None`` in one process
    rank_generator: torch.Generator | None = None
    _sharded: bool = False

    @property
    def augmentation_generator(self) -> torch.Generator:
        """The generator augmentation draws from: ``rank_generator`` inside :meth:`sharded`,
        else ``generator`` (work every rank repeats identically, such as a strategy's own
        training loop, draws the same numbers everywhere)."""
        return self.rank_generator if self._sharded and self.rank_generator is not None else self.generator

    @contextlib.contextmanager
    def sharded(self) -> Iterator[None]:
        """The loop trains on this rank's share of the data inside this block."""
        self._sharded = True
        try:
            yield
        finally:
            self._sharded = False

    @property
    def experience_index(self) -> int:
        return self.experience.index if self.experience is not None else -1

    @property
    def is_first_experience(self) -> bool:
        return self.experience_index == 0

    def join_train_data(self, data: ArrayDataset | None) -> None:
        """Train this experience on ``data`` too (a memory, earlier experiences): its rows are
        appended after the experience's own and marked replayed in every batch drawn from them.
        Call from ``cfs_before_training_exp``."""
        if data is None or len(data) == 0:
            return
        self.train_data = ArrayDataset.concat([self.train_data, data.to(self.device)])

    def replace_train_data(self, data: ArrayDataset) -> None:
        """Train this experience on ``data`` instead of its own data (GDumb trains on its memory
        only): every row counts as replayed. Call from ``cfs_before_training_exp``."""
        self.train_data = data.to(self.device)
        self.n_incoming_rows = 0

    def strategy(self, name: str) -> Any:
        """The composed strategy instance called ``name`` (``state.strategies`` is in canonical,
        alphabetical order, not in the order the user wrote)."""
        for strat in self.strategies:
            if strat.name == name:
                return strat
        raise KeyError(f"no strategy {name!r} in this run ({', '.join(s.name for s in self.strategies)})")

    def seen_classes(self) -> list[int]:
        return list(range(self.n_seen))

    def prepare(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Move a raw batch to the device and normalise it (augment when ``train``), in the
        model's memory format."""
        if x.device != self.device:
            x = x.to(self.device, non_blocking=True)
        x = self.transform(x, train=train, generator=self.augmentation_generator)
        if self.memory_format is torch.contiguous_format or x.dim() != 4:
            return x  # the transform's arithmetic already returns a fresh contiguous tensor
        return x.contiguous(memory_format=self.memory_format)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores for a normalised batch: a strategy's ``cfs_predict`` or the logits."""
        out = self.hooks.cfs_predict(state=self, x=x)
        return out if out is not None else self.model(x)
