"""A strategy's ``state_dict`` is everything it carries across experiences.

After a split-digits run, each stateful strategy's state goes through ``torch.save`` /
``torch.load(weights_only=True)`` (what a checkpoint will do) into a fresh instance, which
must then compute the same regularisation loss and the same predictions as the original on
the same batch. This is what resuming mid-stream will rely on.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from cfs.engine.batch import Batch
from cfs.engine.closed_form import ClosedFormLoss
from cfs.strategy import Strategy

FAST = {"pckd": {"pckd": {"views": 2}}}
STATEFUL = ["replay", "icarl", "derpp", "er-ace", "gdumb", "lwf", "ewc", "kd", "clkd", "nckd", "trg", "pckd"]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def round_trip(strategy: Strategy) -> Strategy:
    buf = io.BytesIO()
    torch.save(strategy.state_dict(), buf)
    buf.seek(0)
    fresh = type(strategy)(strategy.options)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    return fresh


def loss_on_batch(strategy: Strategy, state: Any, seed: int = 0) -> torch.Tensor | None:
    """The strategy's extra loss (and base loss, if it replaces it) on a fixed batch."""
    state.generator.manual_seed(seed)  # replay buffers sample with the run's generator
    state.features, state.outputs = state.model.forward_all(state.batch[0])
    terms = []
    for hook in ("cfs_base_loss", "cfs_loss"):
        fn = getattr(strategy, hook, None) if hook not in strategy.inactive_hooks() else None
        out = fn(state=state) if fn is not None else None
        if isinstance(out, ClosedFormLoss):  # its value; its gradient is the step's business
            out = out.value
        if out is not None:
            terms.append(out.detach())
    return torch.stack(terms).sum() if terms else None


@pytest.mark.parametrize("name", STATEFUL)
def test_state_round_trips_and_behaves_the_same(digits, name):
    result = digits(name, FAST.get(name))["result"]
    state, original = result.state, result.state.strategies[0]
    saved = original.state_dict()
    assert saved, f"{name} carries state across experiences but its state_dict is empty"
    fresh = round_trip(original)
    assert same(fresh.state_dict(), saved)
    data = state.experience.train
    state.batch = Batch(state.prepare(data.x[:32], train=False), data.y[:32], index=torch.arange(32))
    state.model.eval()  # no dropout/BN noise between the two evaluations
    expected = loss_on_batch(original, state)  # may advance running statistics (NCKD's EMA):
    got = loss_on_batch(fresh, state)  # each copy starts from the saved ones
    if expected is not None:
        assert expected.item() > 0, "the regulariser should be active after five experiences"
        torch.testing.assert_close(got, expected)
    if hasattr(original, "cfs_predict"):
        torch.testing.assert_close(fresh.cfs_predict(state=state, x=state.batch[0]),
                                   original.cfs_predict(state=state, x=state.batch[0]))


def test_replay_memory_round_trips_exactly(digits):
    original = digits("replay")["result"].state.strategies[0]
    fresh = round_trip(original)
    a, b = original.memory.dataset(), fresh.memory.dataset()
    assert len(a) == len(b) > 0
    assert torch.equal(a.x.cpu(), b.x.cpu()) and torch.equal(a.y.cpu(), b.y.cpu())
