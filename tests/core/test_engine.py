"""The continual loop on real data: fine-tuning forgets, joint training does not, runs repeat,
and every hook fires in order."""

import pytest
import torch

from cfs import hookimpl
from cfs.config import resolve
from cfs.engine.runner import run_strategy
from cfs.plugins import get_plugin_manager


@pytest.fixture(scope="module")
def pm():
    return get_plugin_manager()


@pytest.fixture(scope="module")
def digits(pm):
    cfg = resolve(pm.scenarios.get("split-digits").defaults, {"scenario": "split-digits"})
    return cfg, pm.scenarios.get("split-digits")(cfg)


@pytest.fixture(scope="module")
def digits_results(pm, digits):
    cfg, scenario = digits
    return {s: run_strategy(pm, cfg, s, scenario, progress=False) for s in ("finetune", "joint")}


def _summary(result):
    from cfs.evaluation.writer import run_metrics

    return run_metrics(result)["summary"]


def test_finetune_forgets_catastrophically(digits_results):
    s = _summary(digits_results["finetune"])
    R = digits_results["finetune"].state.results.rows
    # only the last experience (2 of 10 classes) is still recognised: chance on all 10 is 10%
    assert R[-1][-1] > 0.9
    assert max(R[-1][:-1]) < 0.1
    assert s["last_accuracy"] < 0.3 and s["forgetting"] > 0.8


def test_joint_does_not_forget(digits_results):
    s = _summary(digits_results["joint"])
    assert s["last_accuracy"] > 0.9 and s["forgetting"] < 0.08
    assert s["last_accuracy"] - _summary(digits_results["finetune"])["last_accuracy"] > 0.6


def test_same_seed_same_numbers(pm, digits, digits_results):
    cfg, scenario = digits
    again = run_strategy(pm, cfg, "finetune", scenario, progress=False)
    assert again.state.results.rows == digits_results["finetune"].state.results.rows


def test_hooks_fire_in_order_and_losses_compose(pm, digits):
    cfg, scenario = digits
    cfg = resolve(cfg.to_dict(), {"epochs": 1})
    calls = []

    class Spy:
        @hookimpl
        def cfs_before_training_exp(self, state):
            calls.append(("exp", state.experience_index))

        @hookimpl
        def cfs_before_epoch(self, state):
            calls.append(("epoch", state.epoch))

        @hookimpl
        def cfs_loss(self, state):
            calls.append("loss")
            return torch.tensor(100.0)  # a constant term shifts the reported loss only

        @hookimpl
        def cfs_after_eval(self, state):
            calls.append(("eval", len(state.results.rows)))

    pm.register(Spy(), name="spy")
    try:
        result = run_strategy(pm, cfg, "finetune", scenario, progress=False)
    finally:
        pm.unregister(name="spy")
    assert calls[0] == ("exp", 0) and calls[1] == ("epoch", 0) and calls[2] == "loss"
    assert [c for c in calls if isinstance(c, tuple) and c[0] == "eval"] == [("eval", i) for i in range(1, 6)]
    assert all(e.loss > 100 for e in result.timings.epochs)


def test_predict_hook_replaces_prediction(pm, digits):
    cfg, scenario = digits
    cfg = resolve(cfg.to_dict(), {"epochs": 1})

    class AlwaysZero:
        @hookimpl
        def cfs_predict(self, state, x):
            scores = torch.zeros(len(x), state.n_seen, device=x.device)
            scores[:, 0] = 1
            return scores

    pm.register(AlwaysZero(), name="zero")
    try:
        result = run_strategy(pm, cfg, "finetune", scenario, progress=False)
    finally:
        pm.unregister(name="zero")
    R = result.state.results.rows
    assert R[-1][0] == pytest.approx(0.5, abs=0.05)  # class 0 is half of experience 0
    assert all(v == 0 for v in R[-1][1:])
