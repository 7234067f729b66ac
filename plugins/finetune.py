"""Fine-tuning: train on each experience in turn with cross-entropy over all seen classes.

The lower bound of class-incremental learning: with nothing to protect old classes it suffers
catastrophic forgetting. Every engine default is this method, so it implements no hook.
"""

from __future__ import annotations

from cfs import hookimpl
from cfs.registry import Registry
from cfs.strategy import Strategy


class Finetune(Strategy):
    """Naive sequential training (lower bound: catastrophic forgetting)."""

    name = "finetune"
    compatibility = frozenset({"class-incremental", "fscil", "online"})
    bench_default = True


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Finetune)
