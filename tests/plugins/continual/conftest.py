"""Run strategies on split-digits (5 x 2 classes, MLP, seconds per run) and summarise them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from cfs.config import resolve
from cfs.engine.runner import RunResult, run_strategy
from cfs.evaluation import metrics
from cfs.plugins import get_plugin_manager

EPOCHS = 5


def summarise(result: RunResult) -> dict[str, Any]:
    r = result.state.results
    R, n = np.array(r.rows), np.array(r.test_sizes)
    return {"last": metrics.last_accuracy(R, n), "forgetting": metrics.forgetting(R),
            "diagonal": np.diag(R).tolist(), "result": result}


@pytest.fixture(scope="session")
def digits():
    """``digits(spec, **options)`` -> summary of one split-digits run (cached per arguments)."""
    pm = get_plugin_manager([])
    cache: dict[tuple, dict[str, Any]] = {}

    def run(spec: str, options: dict[str, dict[str, Any]] | None = None, **flags: Any) -> dict[str, Any]:
        key = (spec, repr(options), repr(sorted(flags.items())))
        if key not in cache:
            factory = pm.scenarios.get("split-digits")
            cfg = resolve(factory.defaults, {"epochs": EPOCHS, "seed": 0, "device": "cpu", "options": options,
                                             "strategies": [spec], **flags})
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # tiny MLP: one thread is many times faster on a busy machine
            try:
                cache[key] = summarise(run_strategy(pm, cfg, spec, factory(cfg), progress=False))
            finally:
                torch.set_num_threads(threads)
        return cache[key]

    return run
