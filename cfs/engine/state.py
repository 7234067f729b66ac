"""The run state every hook receives: one object, attributes documented here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cfs.config import RunConfig
from cfs.data.arrays import ArrayDataset
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
    Per experience: ``experience``, ``train_data`` (strategies may replace it),
    ``optimizer``, ``scheduler``, ``n_seen`` (classes seen so far, including this experience's).
    Per batch: ``epoch``, ``iteration``, ``batch`` = (x, y) (augmented and normalised),
    ``batch_index`` (the batch's rows of ``train_data``, to reach the raw images), ``features``,
    ``outputs`` (logits), ``loss``.
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
    n_seen: int = 0
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    epoch: int = 0
    iteration: int = 0
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    batch_index: torch.Tensor | None = None
    features: torch.Tensor | None = None
    outputs: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    memory_format: torch.memory_format = torch.contiguous_format

    @property
    def experience_index(self) -> int:
        return self.experience.index if self.experience is not None else -1

    @property
    def is_first_experience(self) -> bool:
        return self.experience_index == 0

    def seen_classes(self) -> list[int]:
        return list(range(self.n_seen))

    def prepare(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Move a raw batch to the device and normalise it (augment when ``train``), in the
        model's memory format."""
        if x.device != self.device:
            x = x.to(self.device, non_blocking=True)
        x = self.transform(x, train=train, generator=self.generator)
        if self.memory_format is torch.contiguous_format or x.dim() != 4:
            return x  # the transform's arithmetic already returns a fresh contiguous tensor
        return x.contiguous(memory_format=self.memory_format)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores for a normalised batch: a strategy's ``cfs_predict`` or the logits."""
        out = self.hooks.cfs_predict(state=self, x=x)
        return out if out is not None else self.model(x)
