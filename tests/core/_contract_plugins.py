"""Strategies that break the plugin contract in the ways a new author does (loaded with
``-p _contract_plugins`` by tests/core/test_composition.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cfs import hookimpl
from cfs.registry import Registry
from cfs.strategy import Strategy
from cfs_plugins.replay import Replay


class MisspeltHook(Strategy):
    """A strategy whose after-experience hook is misspelt."""

    name = "misspelt-hook"

    @hookimpl
    def cfs_after_trainig_exp(self, state) -> None:  # noqa: D102 - the typo is the point
        pass


class LostHookimpl(Replay):
    """A Replay subclass overriding a hook without repeating @hookimpl."""

    name = "lost-hookimpl"

    def cfs_after_training_exp(self, state) -> None:
        super().cfs_after_training_exp(state)


@dataclass
class PickyOptions:
    size: int = 10

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be at least 1, got {self.size}")


class Picky(Strategy):
    """A strategy whose constructor rejects a bad option value."""

    name = "picky"
    Options = PickyOptions


class PredictA(Strategy):
    """Replaces prediction: always class 0."""

    name = "predict-a"

    @hookimpl
    def cfs_predict(self, state, x):
        return -torch.arange(state.n_seen, dtype=x.dtype, device=x.device).expand(len(x), -1)


class PredictB(PredictA):
    """Replaces prediction too: always the last class seen."""

    name = "predict-b"

    @hookimpl
    def cfs_predict(self, state, x):
        return torch.arange(state.n_seen, dtype=x.dtype, device=x.device).expand(len(x), -1)


class PredictFallback(PredictA):
    """Replaces prediction (class 0) only when nobody else does."""

    name = "predict-fallback"
    fallback_hooks = frozenset({"cfs_predict"})


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    for cls in (MisspeltHook, LostHookimpl, Picky, PredictA, PredictB, PredictFallback):
        registry.add(cls)
