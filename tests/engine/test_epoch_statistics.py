"""The once-per-epoch bookkeeping of the continual loop: the epoch's loss and training accuracy
(hand-computed), training mode restored after a hook left the model in eval mode, and diverged
weights caught although every loss was finite."""

from __future__ import annotations

import pytest
import torch

from cfs import hookimpl, testing
from cfs.engine.continual import ContinualLoop, ensure_train_mode
from cfs.errors import CfsError
from cfs.strategy import Strategy

stats = ContinualLoop._epoch_statistics


def test_epoch_statistics_weigh_losses_by_rows_and_count_only_incoming_rows():
    losses = [torch.tensor(1.0), torch.tensor(4.0)]
    sizes = [3, 1]
    logits = [torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]]), torch.tensor([[0.0, 3.0]])]
    # every target counts: predictions 0, 1, 0, 1 against 0, 0, 0, 1 -> 3 correct of 4
    plain = stats(losses, sizes, logits, [torch.tensor([0, 0, 0]), torch.tensor([1])], torch.device("cpu"), False)
    assert plain == pytest.approx((1.0 * 3 + 4.0 * 1, 4, 3.0, 4))
    # a replayed row (target -1) is neither correct nor counted
    marked = stats(losses, sizes, logits, [torch.tensor([0, -1, 0]), torch.tensor([1])], torch.device("cpu"), True)
    assert marked == pytest.approx((7.0, 4, 3.0, 3))
    # no logits reported: nothing counted (the loop logs NaN, not 0)
    assert stats(losses, sizes, [], [], torch.device("cpu"), False) == pytest.approx((7.0, 4, 0.0, 0))


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
