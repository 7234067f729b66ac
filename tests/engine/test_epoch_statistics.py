"""The once-per-epoch bookkeeping of the continual loop: the epoch's loss and training accuracy
(hand-computed), training mode restored after a hook left the model in eval mode, and diverged
weights caught although every loss was finite."""

from __future__ import annotations

import math

import pytest
import torch

from cfs import hookimpl, testing
from cfs.engine.continual import ensure_train_mode
from cfs.engine.epoch_log import EpochTally, epoch_logs
from cfs.errors import CfsError
from cfs.strategy import Strategy

CPU = torch.device("cpu")


def _tally(epoch, losses, sizes, predictions=None, targets=None, marked=False):
    return EpochTally(0, epoch, 1.0, [torch.tensor(v) for v in losses], sizes,
                      None if predictions is None else torch.tensor(predictions),
                      None if targets is None else torch.tensor(targets), marked)


def test_epoch_logs_weigh_losses_by_rows_and_count_only_incoming_rows():
    plain = _tally(0, [1.0, 4.0], [3, 1], [0, 1, 0, 1], [0, 0, 0, 1])  # 3 of 4 correct
    replayed = _tally(1, [2.0], [4], [0, 1, 0, 1], [0, -1, 0, 1], marked=True)  # a replayed row: not counted
    silent = _tally(2, [3.0, 5.0], [2, 2])  # a replaced step that reports no logits
    logs = epoch_logs([plain, replayed, silent], CPU)
    assert [(e.epoch, e.seconds) for e in logs] == [(0, 1.0), (1, 1.0), (2, 1.0)]
    assert [e.loss for e in logs] == pytest.approx([(1.0 * 3 + 4.0 * 1) / 4, 2.0, 4.0])
    assert logs[0].accuracy == pytest.approx(3 / 4) and logs[1].accuracy == pytest.approx(3 / 3)
    assert math.isnan(logs[2].accuracy)  # nothing measured, not 0.0
    # reduced together or one by one: the same lines
    assert [epoch_logs([t], CPU)[0] for t in (plain, replayed, silent)][:2] == logs[:2]


def test_ensure_train_mode_restores_a_submodule_left_in_eval_mode():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.BatchNorm1d(2)))
    model[1][0].eval()
    ensure_train_mode(model)
    assert all(m.training for m in model.modules())


class EvalAfterEpoch(Strategy):
    """Leaves the backbone in eval mode after every epoch (as a feature probe might) and records
    the mode every training batch sees."""

    name = "eval-after-epoch"
    compatibility = frozenset({"class-incremental"})

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.modes: list[bool] = []

    @hookimpl
    def cfs_after_epoch(self, state):
        state.model.backbone.eval()

    @hookimpl
    def cfs_before_batch(self, state):
        self.modes.append(all(m.training for m in state.model.modules()))


class BreakWeightsAtTheEnd(Strategy):
    """Sets a weight to inf after the last batch of the first experience: every loss stays finite."""

    name = "break-weights"
    compatibility = frozenset({"class-incremental"})

    @hookimpl
    def cfs_after_batch(self, state):
        last = state.epoch == state.config.epochs - 1 and (state.step_in_epoch + 1) * state.config.batch_size >= len(
            state.train_data)
        if state.experience_index == 0 and last:
            with torch.no_grad():
                next(state.model.parameters()).view(-1)[0] = float("inf")


class Plugin:
    @staticmethod
    @hookimpl
    def cfs_add_strategies(registry):
        registry.add(EvalAfterEpoch)
        registry.add(BreakWeightsAtTheEnd)


def test_every_epoch_trains_in_training_mode_after_a_hook_switched_to_eval():
    result = testing.run("eval-after-epoch", plugins=[Plugin], epochs=2, batch_size=32, max_train_per_class=40)
    modes = result.state.strategy("eval-after-epoch").modes
    assert modes and all(modes)


def test_weights_that_diverge_in_the_last_step_stop_the_run():
    with pytest.raises(CfsError) as err:
        testing.run("break-weights", plugins=[Plugin], epochs=2, batch_size=32, max_train_per_class=40)
    assert "non-finite weights" in str(err.value) and "experience 0" in str(err.value)
