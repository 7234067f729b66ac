"""The per-epoch lines of ``training_results.csv``: loss and training accuracy of every epoch.

An epoch leaves an :class:`EpochTally` (its batches' losses and predicted classes, on the
device); :func:`epoch_logs` reduces many tallies at once, in a fixed handful of tensor ops and
one transfer. The loop reduces at the end of an experience (and before a checkpoint, or when
the tallies hold many rows), not after every epoch: with small epochs the reduction's ops cost
as much as a training step, and on a GPU every reduction is a synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cfs.engine import distributed


@dataclass
class EpochLog:
    """One line of ``training_results.csv``."""

    experience: int
    epoch: int
    loss: float
    accuracy: float
    seconds: float


@dataclass
class EpochTally:
    """An epoch not reduced yet: the total loss of every batch and its number of drawn rows;
    the predicted class and target of every counted row (target -1: a replayed row, which no
    prediction equals and which is not counted; ``marked``: whether there are any)."""

    experience: int
    epoch: int
    seconds: float
    losses: list[torch.Tensor]
    sizes: list[int]
    predictions: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    marked: bool = False

    @property
    def rows(self) -> int:
        return 0 if self.targets is None else int(self.targets.shape[0])


def stack_scalars(values: list[torch.Tensor]) -> torch.Tensor:
    """One float vector of one-element tensors (losses), reshaping only those that need it."""
    return torch.stack([t if t.dim() == 0 else t.reshape(()) for t in values]).float()


def epoch_logs(tallies: list[EpochTally], device: torch.device) -> list[EpochLog]:
    """The log line of every tally, summed over ranks: the loss is the mean over drawn rows of
    the batches' losses weighted by their rows; the accuracy is correct / counted rows (NaN
    when no row was counted: a replaced step that reports no logits)."""
    if not tallies:
        return []
    n = len(tallies)
    seen = [sum(t.sizes) for t in tallies]
    counted = [t.rows for t in tallies]
    parts: dict[str, torch.Tensor] = {}
    step_epoch = [i for i, t in enumerate(tallies) for _ in t.losses]
    if step_epoch:
        sizes = torch.tensor([z for t in tallies for z in t.sizes], dtype=torch.float32, device=device)
        weighted = stack_scalars([v for t in tallies for v in t.losses]) * sizes
        parts["loss"] = torch.zeros(n, device=device).index_add_(0, torch.tensor(step_epoch, device=device), weighted)
    if any(counted):
        with_rows = [t for t in tallies if t.rows]
        pred = torch.cat([t.predictions for t in with_rows])
        target = torch.cat([t.targets for t in with_rows])
        row_epoch = torch.repeat_interleave(torch.tensor(counted, device=device))
        parts["correct"] = torch.zeros(n, device=device).index_add_(0, row_epoch, (pred == target).float())
        if any(t.marked for t in tallies):
            parts["counted"] = torch.zeros(n, device=device).index_add_(0, row_epoch, (target >= 0).float())
    if distributed.is_distributed():  # the Python counts are this rank's: sum them over ranks too
        parts["seen"] = torch.tensor(seen, dtype=torch.float32, device=device)
        parts.setdefault("counted", torch.tensor(counted, dtype=torch.float32, device=device))
    values = dict(zip(parts, distributed.all_reduce_sum(torch.stack(list(parts.values()))).tolist())) if parts else {}
    loss = values.get("loss", [0.0] * n)
    correct = values.get("correct", [0.0] * n)
    seen = [int(v) for v in values.get("seen", seen)]
    counted = [int(v) for v in values.get("counted", counted)]
    return [EpochLog(t.experience, t.epoch, loss[i] / max(seen[i], 1),
                     correct[i] / counted[i] if counted[i] else float("nan"), t.seconds)
            for i, t in enumerate(tallies)]
