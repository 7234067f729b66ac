"""Real result folders from two short runs on a synthetic stream (no data files needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cfs.config import resolve
from cfs.data.arrays import ArrayDataset
from cfs.data.transforms import BatchTransform
from cfs.engine.runner import run_strategy
from cfs.evaluation.writer import write_run
from cfs.plugins import get_plugin_manager
from cfs.scenarios.base import Experience, Scenario


def synthetic_scenario() -> Scenario:
    """6 Gaussian clusters (8-d vectors as 8x1x1 images), 3 experiences of 2 classes."""
    means = torch.randn(6, 8, generator=torch.Generator().manual_seed(1)) * 3

    def split(per_class: int, seed: int) -> ArrayDataset:
        y = torch.arange(6).repeat_interleave(per_class)
        x = means[y] + torch.randn(len(y), 8, generator=torch.Generator().manual_seed(seed))
        return ArrayDataset(x[:, :, None, None], y)

    train, test = split(20, 0), split(10, 1)
    exps = [Experience(i, [2 * i, 2 * i + 1], train.with_classes([2 * i, 2 * i + 1]),
                       test.with_classes([2 * i, 2 * i + 1])) for i in range(3)]
    return Scenario("synthetic", "class-incremental", exps, list(range(6)), [str(c) for c in range(6)],
                    BatchTransform(mean=(0.0,) * 8, std=(1.0,) * 8), (8, 1, 1))


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    scenario = synthetic_scenario()
    pm = get_plugin_manager()
    cfg = resolve({"epochs": 2, "batch_size": 8, "lr": 0.05, "device": "cpu"})
    out = []
    for spec in ("finetune", "joint"):
        write_run(run_strategy(pm, cfg, spec, scenario, progress=False), root / spec)
        out.append(root / spec)
    return out
