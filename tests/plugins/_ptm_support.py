"""Support for the PTM / FSCIL strategy tests: a small synthetic stream and a runner fixture.

The runner uses one intra-op thread: on a shared, overloaded 2-core machine two OpenMP threads
spin against each other and make these tiny models 10-20x slower.
"""

from __future__ import annotations

import pytest
import torch

from cfs.config import RunConfig
from cfs.data import load_dataset
from cfs.data.transforms import BatchTransform
from cfs.engine.runner import run_strategy
from cfs.plugins import get_plugin_manager
from cfs.scenarios.base import Scenario
from cfs.scenarios.class_incremental import build_stream
from cfs.scenarios.fscil import build_sessions, generic_sessions


def synthetic_scenario(kind: str = "class-incremental", n_classes: int = 6, seed: int = 0, noise: float = 0.6,
                       n_train: int = 60) -> Scenario:
    data = load_dataset("synthetic", n_classes=n_classes, n_train_per_class=n_train, n_test_per_class=40,
                        shape=(1, 4, 4), seed=seed, noise=noise)
    t = BatchTransform(mean=(0.0,), std=(1.0,))
    if kind == "fscil":
        order, exps = build_sessions(data, generic_sessions(data, base_classes=n_classes - 3, ways=1, shots=5, seed=seed))
    else:
        order = list(range(n_classes))
        exps = build_stream(data, order, [order[i : i + 2] for i in range(0, n_classes, 2)])
    return Scenario("synthetic-test", kind, exps, order, [], t, data.input_shape)


@pytest.fixture(scope="module")
def ptm_pm():
    return get_plugin_manager()


@pytest.fixture
def ptm_run(ptm_pm):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def go(strategy: str, scenario: Scenario, **cfg):
        config = RunConfig(**{"backbone": "mlp", "device": "cpu", "epochs": 1, "seed": 0, **cfg})
        return run_strategy(ptm_pm, config, strategy, scenario, progress=False)

    yield go
    torch.set_num_threads(threads)


def cnn_config(**options) -> dict:
    """Run-config overrides for the APER CNN-variant tests: a small ResNet over the synthetic images."""
    return {"backbone": "resnet20", **({"options": options} if options else {})}
