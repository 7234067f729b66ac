"""The episodic loop: meta-training through the hooks, fixed test episodes, results files."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.config import RunConfig
from cfs.engine.runner import run_strategy
from cfs.errors import CfsError
from cfs.evaluation.episodic import mean_ci95
from cfs.evaluation.writer import write_run
from cfs.strategy import Strategy

from fewshot_data import episodic_scenario

CFG = RunConfig(scenario="informative-5w1s", strategies=["protonet"], backbone="mlp", optimizer="adam", lr=3e-3,
                meta_iterations=100, meta_batch=2, val_interval=50, val_episodes=20, test_episodes=60,
                device="cpu")


class Recorder(Strategy):
    """Records every meta-test episode it is asked about; a linear probe on the head as the method."""

    name = "recorder"
    compatibility = frozenset({"episodic"})
    seen: list = []

    @hookimpl
    def cfs_meta_loss(self, state, tasks):
        logits = state.model(tasks.query_x.flatten(0, 1))[:, : tasks.n_way]
        return F.cross_entropy(logits, tasks.query_y.flatten())

    @hookimpl
    def cfs_predict_episode(self, state, tasks):
        Recorder.seen.append((tasks.support_x.clone(), tasks.query_x.clone()))
        return state.model(tasks.query_x.flatten(0, 1))[:, : tasks.n_way].view(tasks.n_tasks, -1, tasks.n_way)


class Silent(Strategy):
    name = "silent"
    compatibility = frozenset({"episodic"})


@pytest.fixture(scope="module")
def pm_extra(pm):
    for cls in (Recorder, Silent):
        if cls.name not in pm.strategies:
            pm.strategies.add(cls)
    return pm


def test_protonet_meta_learns_unseen_classes(pm, tmp_path):
    """ProtoNet through the real loop: meta-test accuracy on classes never trained on rises far
    above that of the untrained embedding on the same fixed episodes."""
    untrained = run_strategy(pm, replace(CFG, meta_iterations=1, val_interval=1, val_episodes=1), "protonet",
                             episodic_scenario(), progress=False)
    trained = run_strategy(pm, CFG, "protonet", episodic_scenario(), progress=False)
    acc0 = np.mean(untrained.state.extra["episodic"].test_accuracies)
    acc1 = np.mean(trained.state.extra["episodic"].test_accuracies)
    assert acc1 > 0.6 and acc1 > acc0 + 0.3, (acc0, acc1)
    res = trained.state.extra["episodic"]
    assert [i for i, _ in res.val_curve] == [50, 100]
    assert res.best_iteration in (50, 100)
    data = write_run(trained, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    mean, ci = mean_ci95(res.test_accuracies)
    assert saved["kind"] == "episodic" and saved["summary"]["episodes"] == 60
    assert saved["summary"]["accuracy"] == pytest.approx(mean) and saved["summary"]["ci95"] == pytest.approx(ci)
    assert data["episodes"] == {"n_way": 5, "k_shot": 1, "q_query": 5, "train_n_way": 5}
    lines = (tmp_path / "run" / "episodes.csv").read_text().splitlines()
    assert lines[0] == "episode,accuracy" and len(lines) == 61
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_info["scenario"]["episodic"]["classes"] == {"train": 24, "val": 6, "test": 10}


def test_same_test_episodes_whatever_the_training(pm_extra):
    """Test episodes depend on the seed only: two runs that train differently (other iteration
    count, other learning rate) are scored on identical episodes; another seed changes them."""
    runs = []
    for cfg in (replace(CFG, meta_iterations=3, test_episodes=6, val_interval=100, lr=0.1),
                replace(CFG, meta_iterations=7, test_episodes=6, val_interval=100),
                replace(CFG, meta_iterations=3, test_episodes=6, val_interval=100, seed=1)):
        Recorder.seen = []
        run_strategy(pm_extra, cfg, "recorder", episodic_scenario(), progress=False)
        runs.append(torch.cat([q for _, q in Recorder.seen]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_strategy_without_meta_hooks_is_a_user_error(pm_extra):
    with pytest.raises(CfsError, match="cfs_meta_loss"):
        run_strategy(pm_extra, replace(CFG, meta_iterations=2), "silent", episodic_scenario(), progress=False)


def test_continual_strategy_is_rejected_on_episodic_scenarios(pm):
    with pytest.raises(CfsError, match="does not support episodic"):
        run_strategy(pm, CFG, "finetune", episodic_scenario(), progress=False)


def test_ci95_is_normal_interval_of_the_mean():
    accs = [0.6, 0.8, 1.0, 0.8]
    mean, ci = mean_ci95(accs)
    assert mean == pytest.approx(0.8)
    assert ci == pytest.approx(1.96 * np.std(accs, ddof=1) / 2)
