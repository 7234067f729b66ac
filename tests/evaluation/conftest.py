"""Real result folders from two short runs on a synthetic stream (no data files needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfs.config import resolve
from cfs.engine.runner import run_strategy
from cfs.evaluation.writer import write_run
from cfs.plugins import get_plugin_manager
from cfs.scenarios.base import Scenario
from cfs.testing import synthetic_stream


def synthetic_scenario() -> Scenario:
    """6 Gaussian clusters, 3 experiences of 2 classes (cfs.testing's stream)."""
    return synthetic_stream(n_classes=6, n_experiences=3, per_class=20, test_per_class=10)


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
