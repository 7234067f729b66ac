"""One optimisation step for both loops (cfs.engine.step): the episodic loop adds every
``cfs_loss`` term to ``cfs_meta_loss`` and runs the backward hooks, as the continual loop does;
a replaced training step's logits count towards the epoch's training accuracy."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from cfs import hookimpl, testing
from cfs.config import RunConfig
from cfs.engine.runner import run_strategy
from cfs.registry import Registry
from cfs.strategy import Strategy

from fewshot_data import episodic_scenario

CFG = RunConfig(scenario="informative-5w1s", strategies=["meta-probe+penalty"], backbone="mlp", optimizer="adam",
                lr=3e-3, meta_iterations=4, meta_batch=2, val_interval=100, val_episodes=2, test_episodes=4,
                device="cpu")


class MetaProbe(Strategy):
    """A linear probe as the meta-loss; records the total loss the step back-propagates."""

    name = "meta-probe"
    compatibility = frozenset({"episodic"})

    def __init__(self, options=None):
        super().__init__(options)
        self.base: list[float] = []
        self.total: list[float] = []
        self.after_backward = 0

    @hookimpl
    def cfs_meta_loss(self, state, tasks):
        logits = state.model(tasks.query_x.flatten(0, 1))[:, : tasks.n_way]
        loss = F.cross_entropy(logits, tasks.query_y.flatten())
        self.base.append(loss.item())
        return loss

    @hookimpl
    def cfs_predict_episode(self, state, tasks):
        return state.model(tasks.query_x.flatten(0, 1))[:, : tasks.n_way].view(tasks.n_tasks, -1, tasks.n_way)

    @hookimpl
    def cfs_before_backward(self, state):
        self.total.append(state.loss.item())

    @hookimpl
    def cfs_after_backward(self, state):
        self.after_backward += 1


class Penalty(Strategy):
    """An extra loss term of exactly 1.5, in any loop."""

    name = "penalty"
    compatibility = frozenset({"episodic", "class-incremental"})

    @hookimpl
    def cfs_loss(self, state):
        return torch.tensor(1.5)


class OwnStep(Strategy):
    """Replaces the training step; sets ``state.outputs`` only with ``report=True``."""

    name = "own-step"

    def __init__(self, options=None):
        super().__init__(options)
        self.report = True

    @hookimpl
    def cfs_training_step(self, state):
        x, y = state.batch
        out = state.model(x)
        loss = F.cross_entropy(out, y)
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        if self.report:
            state.outputs = out.detach()
        return loss


class Plugin:
    @staticmethod
    @hookimpl
    def cfs_add_strategies(registry: Registry) -> None:
        for cls in (MetaProbe, Penalty, OwnStep):
            registry.add(cls)


def test_episodic_loop_adds_cfs_loss_terms_and_runs_backward_hooks():
    pm = testing.plugin_manager([Plugin])
    result = run_strategy(pm, CFG, "meta-probe+penalty", episodic_scenario(), progress=False)
    probe = result.state.strategy("meta-probe")
    assert len(probe.total) == CFG.meta_iterations == probe.after_backward
    for base, total in zip(probe.base, probe.total):
        assert math.isclose(total, base + 1.5, rel_tol=1e-6)


def test_episodic_loop_runs_under_autocast_when_amp_is_on():
    pm = testing.plugin_manager([Plugin])
    seen = []

    class Spy(Penalty):
        name = "spy"

        @hookimpl
        def cfs_loss(self, state):
            seen.append(torch.is_autocast_enabled("cpu"))
            return None

    pm.strategies.add(Spy)
    run_strategy(pm, replace(CFG, amp=True), "meta-probe+spy", episodic_scenario(), progress=False)
    assert seen and all(seen)


def test_replaced_step_counts_its_logits_in_the_training_accuracy():
    pm = testing.plugin_manager([Plugin])
    counted = testing.run("own-step", pm=pm, epochs=3)
    accs = [e.accuracy for e in counted.timings.epochs]
    assert all(0.0 <= a <= 1.0 for a in accs) and max(accs) > 0.5
    assert testing.final_accuracy(counted) > 0.1  # it trained

    original = OwnStep.__init__

    def silent(self, options=None):
        original(self, options)
        self.report = False

    OwnStep.__init__ = silent
    try:
        unreported = testing.run("own-step", pm=pm, epochs=1)
    finally:
        OwnStep.__init__ = original
    assert all(math.isnan(e.accuracy) for e in unreported.timings.epochs)  # nothing measured, not 0.0
