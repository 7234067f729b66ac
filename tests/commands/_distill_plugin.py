"""A third-party distillation loss, loaded with ``-p _distill_plugin`` by test_distill.py: it is
registered through ``cfs_add_distill_losses`` and must run with no change to the core."""

from __future__ import annotations

from dataclasses import dataclass

from cfs import hookimpl
from cfs.losses.distill import Distillation

#: The epoch of every batch the loss was called on.
CALLS: list[int] = []


@dataclass(frozen=True)
class LogitMSE:
    """Mean squared error between student and teacher logits."""

    name = "logit-mse"
    weight: float = 0.1

    def build(self, teacher, student, data, transform, device) -> Distillation:
        def extra(x, y, features, logits, epoch):
            CALLS.append(epoch)
            return self.weight * (logits - teacher(x)).pow(2).mean()

        return Distillation(extra, report=lambda: f"logit-mse was called on {len(CALLS)} batches")


@hookimpl
def cfs_add_distill_losses(registry) -> None:
    registry.add(LogitMSE())
