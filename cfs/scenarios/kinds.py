"""The three first-party scenario kinds, registered like any plugin's (``cfs_add_scenario_kinds``).

* ``class-incremental``: a stream of experiences, each adding classes; the continual loop;
  accuracy-matrix metrics.
* ``fscil``: the same loop and metrics (a base session, then few-shot sessions), plus the
  per-session accuracy, base/novel split and its session tables.
* ``episodic``: N-way K-shot episodes; the meta-learning loop; mean accuracy with its 95 %
  interval.
* ``online``: a class-incremental stream learnt in one pass of small batches
  (:mod:`cfs.scenarios.online`); the accuracy-matrix metrics of the task ends plus average
  anytime accuracy over the evaluation points of the stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cfs import hookimpl
from cfs.data.arrays import DataSplit
from cfs.engine.continual import ContinualLoop
from cfs.engine.episodic import EpisodicLoop
from cfs.evaluation import continual, episodic, fscil, online
from cfs.evaluation.table import format_table
from cfs.kinds import ReportSection, ScenarioKind
from cfs.registry import Registry
from cfs.scenarios.base import Scenario
from cfs.scenarios.builtin import build_class_incremental
from cfs.scenarios.episodic import build_episodic
from cfs.scenarios.fscil import build_fscil
from cfs.scenarios.online import OnlineLoop, build_online


class ClassIncremental(ScenarioKind):
    """Class-incremental streams: each experience adds classes; accuracy matrix, forgetting."""

    name = "class-incremental"
    loop = ContinualLoop
    max_train_per_class = True

    def build(self, spec: dict, cfg: Any, data: DataSplit) -> Scenario:
        return build_class_incremental(spec, cfg, data)

    def metrics(self, result: Any) -> dict[str, Any]:
        return continual.continual_metrics(result)

    def write_files(self, folder: Path, result: Any, data: dict[str, Any]) -> None:
        continual.write_continual_files(folder, result, data)

    def header(self, scenario: Scenario, cfg: Any) -> str:
        return (f"scenario {scenario.name}: {len(scenario.experiences)} experiences, {scenario.num_classes} classes, "
                f"backbone {cfg.backbone}, {cfg.epochs} epochs, seed {cfg.seed}")

    def table(self, rows: list[dict[str, Any]]) -> str:
        return format_table(rows)

    def report(self, runs: list[Any], out: Path) -> ReportSection:
        return continual.continual_report(runs, out)


class FSCIL(ClassIncremental):
    """Few-shot class-incremental sessions: per-session accuracy, base/novel accuracy, PD."""

    name = "fscil"
    max_train_per_class = False  # the sessions pick their own shots

    def build(self, spec: dict, cfg: Any, data: DataSplit) -> Scenario:
        return build_fscil(spec, cfg, data)

    def metrics(self, result: Any) -> dict[str, Any]:
        data = super().metrics(result)
        res = result.state.results
        data["fscil"] = fscil.fscil_metrics(np.array(res.rows), np.array(res.test_sizes))
        data["time"] = data.pop("time")  # keep time last, as in every metrics.json
        return data

    def table(self, rows: list[dict[str, Any]]) -> str:
        return "\n".join([super().table(rows)] + [fscil.session_table(r["fscil"], r["strategy"]) for r in rows])

    def report(self, runs: list[Any], out: Path) -> ReportSection:
        return fscil.fscil_report(runs, out)


class Online(ClassIncremental):
    """Online class-incremental: one pass of small batches, anytime evaluation, AAA."""

    name = "online"
    loop = OnlineLoop

    def build(self, spec: dict, cfg: Any, data: DataSplit) -> Scenario:
        return build_online(spec, cfg, data)

    def metrics(self, result: Any) -> dict[str, Any]:
        return online.online_metrics(result, super().metrics(result))

    def table(self, rows: list[dict[str, Any]]) -> str:
        return online.online_table(rows)

    def header(self, scenario: Scenario, cfg: Any) -> str:
        setup = scenario.online
        return (f"scenario {scenario.name} (online, one pass): {len(scenario.experiences)} tasks, "
                f"{scenario.num_classes} classes, batch {cfg.batch_size}, evaluated every {setup.eval_every} "
                f"batches and at task ends, boundaries {setup.boundaries}, backbone {cfg.backbone}, seed {cfg.seed}")


class Episodic(ScenarioKind):
    """Few-shot episodes (N-way K-shot): meta-train, validate, meta-test; accuracy +- 95 % CI."""

    name = "episodic"
    loop = EpisodicLoop
    channels_last = False  # the meta-learning loops run the model functionally

    def build(self, spec: dict, cfg: Any, data: DataSplit) -> Scenario:
        return build_episodic(spec, cfg, data)

    def metrics(self, result: Any) -> dict[str, Any]:
        return episodic.episodic_metrics(result)

    def write_files(self, folder: Path, result: Any, data: dict[str, Any]) -> None:
        episodic.write_episodic_files(folder, result)

    def header(self, scenario: Scenario, cfg: Any) -> str:
        shape, n = scenario.episodic.eval_shape, {k: len(v) for k, v in scenario.episodic.classes.items()}
        return (f"scenario {scenario.name}: {shape.n_way}-way {shape.k_shot}-shot {shape.q_query}-query, classes "
                f"{n['train']}/{n['val']}/{n['test']} (train/val/test), backbone {cfg.backbone}, "
                f"{cfg.meta_iterations} meta-iterations x {cfg.meta_batch} tasks, seed {cfg.seed}")

    def table(self, rows: list[dict[str, Any]]) -> str:
        return episodic.format_episodic_table(rows)

    def report(self, runs: list[Any], out: Path) -> ReportSection:
        return episodic.episodic_report(runs, out)


@hookimpl
def cfs_add_scenario_kinds(registry: Registry) -> None:
    for kind in (ClassIncremental(), FSCIL(), Online(), Episodic()):
        registry.add(kind)
