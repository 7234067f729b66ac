"""Few-shot results: mean episode accuracy with its 95 % confidence interval, and the files.

The few-shot literature reports the mean query accuracy over (usually 600) test episodes
plus or minus ``1.96 * std / sqrt(n)``, the half-width of a normal-approximation 95 %
interval for the mean; the sample standard deviation (ddof=1) is used here.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cfs.evaluation import plots
from cfs.evaluation.report import Column, metric_tables
from cfs.evaluation.table import align
from cfs.kinds import ReportSection

Z95 = 1.96


def mean_ci95(accuracies: Sequence[float]) -> tuple[float, float]:
    """Mean and 95 % interval half-width of per-episode accuracies (0 for fewer than 2)."""
    a = np.asarray(list(accuracies), dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    half = Z95 * a.std(ddof=1) / math.sqrt(a.size) if a.size > 1 else 0.0
    return float(a.mean()), float(half)


def episodic_metrics(result: Any) -> dict[str, Any]:
    """The ``metrics.json`` of an episodic run (a :class:`cfs.engine.runner.RunResult`)."""
    res = result.state.extra["episodic"]
    acc, ci = mean_ci95(res.test_accuracies)
    setup = result.state.scenario.episodic
    return {
        "strategy": result.strategy,
        "scenario": result.state.scenario.name,
        "kind": "episodic",
        "summary": {"accuracy": acc, "ci95": ci, "episodes": len(res.test_accuracies)},
        "episodes": {"n_way": res.n_way, "k_shot": res.k_shot, "q_query": res.q_query,
                     "train_n_way": setup.train_shape.n_way if setup is not None else res.n_way},
        "best_iteration": res.best_iteration,
        "val_curve": [{"iteration": i, "accuracy": a} for i, a in res.val_curve],
        "train_log": [{"iteration": i, "loss": loss, "seconds": sec} for i, loss, sec in res.train_log],
        "episode_accuracy": res.test_accuracies,
        "time": {"total_seconds": result.seconds, "train_seconds": result.timings.train_seconds,
                 "eval_seconds": result.timings.eval_seconds},
    }


def write_episodic_files(folder: Path, result: Any) -> None:
    """``episodes.csv`` (accuracy of every test episode) and ``training_results.csv``
    (meta-loss per logged meta-iteration, validation accuracy where one was measured)."""
    res = result.state.extra["episodic"]
    with open(Path(folder) / "episodes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["episode", "accuracy"])
        for i, a in enumerate(res.test_accuracies):
            w.writerow([i, f"{a:.6f}"])
    val = dict(res.val_curve)
    with open(Path(folder) / "training_results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["meta_iteration", "meta_loss", "val_accuracy", "seconds"])
        for it, loss, sec in res.train_log:
            w.writerow([it, f"{loss:.6f}", f"{val[it]:.6f}" if it in val else "", f"{sec:.2f}"])


def format_episodic_table(rows: list[dict[str, Any]]) -> str:
    """``cfs bench`` table for episodic runs: strategy, accuracy +- 95 % CI, time."""
    header = ("strategy", "accuracy %", "95% CI", "episodes", "time s")
    return align([header] + [(r["strategy"], f"{100 * r['summary']['accuracy']:.2f}", f"+-{100 * r['summary']['ci95']:.2f}",
                              str(r["summary"]["episodes"]), f"{r['time']['total_seconds']:.1f}") for r in rows])


def episodic_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few-shot summary (``accuracy``, ``ci95``, ``episodes``) of a ``metrics.json``,
    also where an older version wrote it under ``episodic``."""
    if isinstance(metrics.get("episodic"), dict):
        block = metrics["episodic"]
        return block.get("summary", block)
    return metrics.get("summary", {})


def _episodic(key: str) -> Any:
    """A column's reader of one few-shot summary number, wherever the run's version wrote it."""
    return lambda r: episodic_summary(r.metrics).get(key)


def episodic_report(runs: list[Any], out: Path) -> ReportSection:
    """Mean accuracy with its 95 % interval: a table (seed groups as mean ± std of the
    accuracy and of the interval) and ``fewshot_accuracy.png``."""
    lines = metric_tables(runs, [Column("accuracy %", _episodic("accuracy"), digits=2),
                                 Column("95% CI", _episodic("ci95"), digits=2, prefix="+-"),
                                 Column("episodes", _episodic("episodes"), scale=1.0, digits=0, spread=False)])
    figures = []
    measured = {r.label: episodic_summary(r.metrics) for r in runs}
    measured = {k: e for k, e in measured.items() if e.get("accuracy") is not None}
    if measured:
        path = Path(out) / "fewshot_accuracy.png"
        plots.plot_intervals({k: e["accuracy"] for k, e in measured.items()},
                             {k: e.get("ci95") or 0.0 for k, e in measured.items()}, path,
                             "Few-shot accuracy with its 95% interval")
        figures.append(("Few-shot accuracy with its 95% interval", path))
    return ReportSection("\n".join(lines), figures)
