"""learn2learn TaskDatasets as cfs episode sources (cfs.data.l2l_adapter).

learn2learn 0.2.0 is built by ``scripts/install-l2l.sh`` (CI runs it). Without it these tests
SKIP with a loud reason: the interop is then NOT checked.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from cfs.config import RunConfig
from cfs.data.arrays import ArrayDataset
from cfs.data.fewshot import FewShotSplit
from cfs.data.l2l_adapter import L2LEpisodeSource, task_to_episodes, use_tasksets
from cfs.engine.runner import run_strategy
from cfs.errors import CfsError
from cfs.plugins import get_plugin_manager
from cfs.scenarios.episodic import build_episodic

l2l = pytest.importorskip(
    "learn2learn",
    reason="LEARN2LEARN NOT INSTALLED: the learn2learn TaskDataset interop was NOT checked (run scripts/install-l2l.sh)",
)


def test_task_to_episodes_by_hand():
    """Classes numbered by sorted label; the first K images of each class (task order) are its
    support, the next Q its queries."""
    y = torch.tensor([7, 3, 7, 3, 9, 9, 3, 7, 9])
    x = torch.arange(9.0).view(9, 1, 1, 1) * 10
    ep = task_to_episodes([(x, y), (x.flip(0), y.flip(0))], k_shot=1, q_query=2)
    assert (ep.n_way, ep.k_shot, ep.q_query, ep.n_tasks) == (3, 1, 2, 2)
    assert ep.support_x[0].flatten().tolist() == [10, 0, 40]  # first 3, first 7, first 9
    assert ep.query_x[0].flatten().tolist() == [30, 60, 20, 70, 50, 80]
    assert ep.support_y[0].tolist() == [0, 1, 2] and ep.query_y[0].tolist() == [0, 0, 1, 1, 2, 2]
    assert ep.support_x[1].flatten().tolist() == [60, 70, 80]
    with pytest.raises(CfsError, match="k_shot \\+ q_query"):
        task_to_episodes([(x, y)], k_shot=2, q_query=2)


def informative(n_classes: int = 30, per_class: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes differ in 4 of 64 pixels, the other 60 are loud shared noise: learning shows as
    a large gain on unseen classes (raw-pixel prototypes are poor)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(n_classes, 64)
    means[:, :4] = 3.0 * torch.randn(n_classes, 4, generator=g)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    noise = torch.randn(len(y), 64, generator=g) * torch.cat([torch.full((4,), 0.3), torch.full((60,), 3.0)])
    return (means[y] + noise).view(-1, 1, 8, 8), y


def taskset(x: torch.Tensor, y: torch.Tensor, n: int, k: int, q: int, num_tasks: int):
    ds = l2l.data.MetaDataset(TensorDataset(x, y))
    t = l2l.data.transforms
    return l2l.data.TaskDataset(ds, [t.NWays(ds, n), t.KShots(ds, k + q), t.LoadData(ds), t.RemapLabels(ds)],
                                num_tasks=num_tasks)


def test_source_gives_fixed_episodes_and_needs_finite_tasks():
    x, y = informative()
    src = L2LEpisodeSource(taskset(x, y, 5, 1, 3, num_tasks=20), k_shot=1, q_query=3)
    a = src.batch(*src.fixed_indices(6, seed=0, split="test"))
    b = src.batch(*src.fixed_indices(6, seed=0, split="test"))
    assert a.support_x.shape == (6, 5, 1, 8, 8) and a.query_x.shape == (6, 15, 1, 8, 8)
    assert torch.equal(a.query_x, b.query_x) and torch.equal(a.support_x, b.support_x)
    fresh = L2LEpisodeSource(taskset(x, y, 5, 1, 3, num_tasks=-1), k_shot=1)
    with pytest.raises(CfsError, match="finite num_tasks"):
        fresh.fixed_indices(3, 0, "test")
    assert fresh.batch(*fresh.sample_indices(2, torch.Generator())).query_x.shape == (2, 15, 1, 8, 8)


def test_l2l_tasksets_drive_the_episodic_loop():
    """ProtoNet meta-trained on a learn2learn TaskDataset of 20 classes is accurate on the test
    TaskDataset's 10 unseen classes, far above the untrained embedding on the same episodes."""
    x, y = informative()
    train, test = y < 20, y >= 20
    pool = ArrayDataset(x, y, [f"c{k}" for k in range(30)])
    split = FewShotSplit("informative", pool, ArrayDataset(x[:0], y[:0]), (0.0,), (1.0,),
                         {"train": list(range(20)), "val": [], "test": list(range(20, 30))})
    cfg = RunConfig(scenario="l2l", strategies=["protonet"], backbone="mlp", optimizer="adam", lr=3e-3,
                    meta_iterations=100, meta_batch=2, val_interval=1000, test_episodes=40, device="cpu")
    pm = get_plugin_manager()
    accs = []
    for c in (replace(cfg, meta_iterations=1), cfg):
        scenario = build_episodic({"name": "l2l", "episodes": {"n_way": 5, "k_shot": 1, "q_query": 5}}, c, split)
        use_tasksets(scenario.episodic, 1, 5, train=taskset(x[train], y[train], 5, 1, 5, num_tasks=-1),
                     test=taskset(x[test], y[test] - 20, 5, 1, 5, num_tasks=100))
        run = run_strategy(pm, c, "protonet", scenario, progress=False)
        accs.append(np.mean(run.state.extra["episodic"].test_accuracies))
        assert len(run.state.extra["episodic"].test_accuracies) == 40
    assert accs[1] > 0.6 and accs[1] > accs[0] + 0.25, accs
