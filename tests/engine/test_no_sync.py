"""The training step never reads a number back from the device (GPU readiness): reads happen a
fixed number of times per epoch, however many batches it has; the non-finite-loss check that
used to read every step is deferred and still names the first bad batch."""

from __future__ import annotations

import pytest
import torch

from cfs import hookimpl, testing
from cfs.engine import step as step_module
from cfs.errors import CfsError
from cfs.strategy import Strategy

READS = ("item", "tolist", "__float__", "__int__", "__bool__")


def count_reads(monkeypatch) -> dict[str, int]:
    """Count every tensor -> Python number read (each one waits for a CUDA device)."""
    counts = dict.fromkeys(READS, 0)
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def reads_per_epoch(monkeypatch, batch_size: int, spec: str = "finetune") -> int:
    """Reads during the epochs of a run of ``spec`` (evaluation excluded)."""
    from cfs.engine.continual import ContinualLoop

    counts = count_reads(monkeypatch)
    inside = {"reads": 0}
    original = ContinualLoop._epochs

    def epochs(self, start):
        before = sum(counts.values())
        original(self, start)
        inside["reads"] += sum(counts.values()) - before

    monkeypatch.setattr(ContinualLoop, "_epochs", epochs)
    testing.run(spec, epochs=2, batch_size=batch_size, max_train_per_class=40)
    monkeypatch.undo()
    return inside["reads"]


# the new-class CE (ewc, lwf), EWC's penalty, the reservoir (er, derpp, mir), ER-ACE's and NCKD's losses
@pytest.mark.parametrize("spec", ["finetune", "ewc", "lwf", "er", "derpp", "er-ace", "mir", "nckd"])
def test_reads_per_epoch_do_not_grow_with_the_number_of_batches(monkeypatch, spec):
    few = reads_per_epoch(monkeypatch, batch_size=80, spec=spec)  # 1 batch per epoch
    many = reads_per_epoch(monkeypatch, batch_size=8, spec=spec)  # 10 batches per epoch
    assert many == few
    assert few <= 5 * 2 * 4  # 5 experiences x 2 epochs x a few end-of-epoch reads


class NaNAt(Strategy):
    """A loss term that is NaN at one batch (experience 1, epoch 1, batch 3)."""

    name = "nan-at"
    compatibility = frozenset({"class-incremental"})

    @hookimpl
    def cfs_loss(self, state):
        bad = state.experience_index == 1 and state.epoch == 0 and state.step_in_epoch == 2
        return torch.tensor(float("nan") if bad else 0.0)


class Plugin:
    @staticmethod
    @hookimpl
    def cfs_add_strategies(registry):
        registry.add(NaNAt)


def test_the_deferred_check_names_the_first_non_finite_batch():
    with pytest.raises(CfsError) as err:
        testing.run("finetune+nan-at", plugins=[Plugin], epochs=2, batch_size=8, max_train_per_class=40)
    assert "non-finite loss (nan)" in str(err.value)
    assert "experience 1, epoch 1, batch 3" in str(err.value)


def test_the_deferred_check_runs_every_check_every_steps(monkeypatch):
    monkeypatch.setattr(step_module, "CHECK_EVERY", 2)
    checked = []
    original = step_module.OptimStep.check_losses

    def check(self):
        checked.append(len(self.pending))
        original(self)

    monkeypatch.setattr(step_module.OptimStep, "check_losses", check)
    testing.run("finetune", epochs=1, batch_size=8, max_train_per_class=20)  # 5 batches per experience
    assert max(checked) == 2 and 2 in checked


def test_skip_batch_still_skips_the_bad_update():
    result = testing.run("finetune+nan-at", plugins=[Plugin], epochs=2, batch_size=8, max_train_per_class=40,
                         on_nan="skip-batch")
    assert result.state.extra["skipped_batches"] == 1
