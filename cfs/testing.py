"""Run a strategy inside a test, exactly as ``cfs bench`` runs it.

For plugin authors (first- and third-party). Everything goes through the real engine: the
plugin manager loads entry points and your plugin objects, the composition is built and
validated by :func:`cfs.engine.runner.plan_runs` (hook names, ``@hookimpl`` markers, options,
replacement-hook conflicts: the same one-line :class:`cfs.errors.CfsError` a user would see),
and the run's loop calls the hooks. Typical use::

    from cfs import testing

    def test_my_method_learns():
        result = testing.run("my-method", plugins=[my_plugin_module], epochs=3)
        assert testing.final_accuracy(result) > testing.final_accuracy(testing.run("finetune", epochs=3)) + 0.3

Data: ``split-digits`` (scikit-learn's 8x8 digits, embedded, 5 experiences of 2 classes; a run
takes about a second on one CPU core) or :func:`synthetic_stream` (Gaussian class clusters,
any size, no files at all).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from cfs.config import resolve
from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.data.transforms import BatchTransform
from cfs.engine.runner import (RunResult, check_compatible, make_strategies, plan_runs, run_strategy,
                               strategy_classes)
from cfs.evaluation import metrics
from cfs.plugins import CfsPluginManager, get_plugin_manager
from cfs.scenarios.base import Scenario
from cfs.scenarios.class_incremental import build_stream, split_classes


def plugin_manager(plugins: Iterable[Any] = (), plugin_args: Iterable[str] = ()) -> CfsPluginManager:
    """A manager with the installed plugins plus ``plugins`` (modules or objects with
    ``@hookimpl`` functions such as ``cfs_add_strategies``) and ``-p`` style ``plugin_args``."""
    return get_plugin_manager(list(plugin_args), extra_plugins=list(plugins))


def synthetic_stream(n_classes: int = 6, n_experiences: int = 3, per_class: int = 60, test_per_class: int = 30,
                     size: int = 8, spread: float = 0.6, seed: int = 0, name: str = "synthetic",
                     kind: str = "class-incremental") -> Scenario:
    """A stream of 1 x ``size`` x ``size`` float "images": one Gaussian cluster per class around
    a random centre, separable but not trivially (``spread``); ``kind`` names any registered
    kind whose loop takes class-incremental experiences (a plugin's own, in tests)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, 1, size, size, generator=g)

    def draw(n: int) -> ArrayDataset:
        y = torch.arange(n_classes).repeat_interleave(n)
        x = centres[y] + spread * torch.randn(len(y), 1, size, size, generator=g)
        return ArrayDataset(x, y, [f"class{c}" for c in range(n_classes)])

    split = DataSplit("synthetic", draw(per_class), draw(test_per_class), mean=(0.0,), std=(1.0,))
    order = list(range(n_classes))
    return Scenario(name=name, kind=kind,
                    experiences=build_stream(split, order, split_classes(n_classes, n_experiences)),
                    class_order=order, class_names=split.train.class_names,
                    transform=BatchTransform(mean=(0.0,), std=(1.0,)), input_shape=(1, size, size))


def run(spec: str, plugins: Iterable[Any] = (), scenario: str | Scenario = "split-digits", epochs: int = 2,
        seed: int = 0, options: dict[str, dict[str, Any]] | None = None, threads: int | None = 1,
        pm: CfsPluginManager | None = None, **config: Any) -> RunResult:
    """Train and evaluate ``spec`` (``"a+b"`` composes) on ``scenario`` with the real engine.

    ``config``: any other key of a run config (``batch_size``, ``lr``, ``backbone``, ...).
    ``threads``: torch CPU threads while it runs (1 is fastest for tiny models on a busy
    machine; ``None`` leaves the setting alone)."""
    pm = pm or plugin_manager(plugins)
    name = scenario if isinstance(scenario, str) else scenario.name
    factory = pm.scenarios.get(name) if isinstance(scenario, str) else None
    defaults = getattr(factory, "defaults", {}) if factory is not None else {"backbone": "mlp"}
    cfg = resolve(defaults, {"scenario": name if factory is not None else None, "epochs": epochs, "seed": seed,
                             "device": "cpu", "options": options, "strategies": [spec], **config})
    if factory is not None:
        [(_, strategies)] = plan_runs(pm, cfg)
        built = factory(cfg)
    else:  # a built scenario: the same checks plan_runs makes for a registered one
        built = scenario
        classes = strategy_classes(pm, spec)
        check_compatible(classes, built.kind, built.name)
        strategies = make_strategies(classes, cfg)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return run_strategy(pm, cfg, spec, built, progress=False, strategies=strategies)
    finally:
        torch.set_num_threads(previous)


def accuracy_matrix(result: RunResult) -> np.ndarray:
    """``R[i, j]``: accuracy on experience ``j`` after training experience ``i``."""
    return np.array(result.state.results.rows)


def final_accuracy(result: RunResult) -> float:
    """Accuracy on all test data after the last experience (weighted by test sizes)."""
    r = result.state.results
    return float(metrics.last_accuracy(np.array(r.rows), np.array(r.test_sizes)))


def forgetting(result: RunResult) -> float:
    """Average forgetting of the earlier experiences (Avalanche's definition)."""
    return float(metrics.forgetting(accuracy_matrix(result)))
