"""Results of accuracy-matrix runs (class-incremental streams and FSCIL sessions): the
``metrics.json`` numbers, the CSV and PNG files beside it and the ``cfs report`` section.

``R[i, j]`` is the accuracy on experience ``j``'s test data after training experience ``i``
(:mod:`cfs.evaluation.metrics` derives every summary number from it).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from cfs.evaluation import metrics as M
from cfs.evaluation import plots
from cfs.evaluation.csvlog import write_avalanche_csvs
from cfs.evaluation.names import CONFUSION, eval_metrics, history
from cfs.evaluation.report import Column, metric_tables
from cfs.kinds import ReportSection


def continual_metrics(result: Any) -> dict[str, Any]:
    """Every number of a run (a :class:`cfs.engine.runner.RunResult`): summary metrics,
    matrix, per-class accuracy, Avalanche names."""
    res = result.state.results
    R, L = np.array(res.rows), np.array(res.losses)
    b, n = np.array(res.initial), np.array(res.test_sizes)
    n_classes = result.state.scenario.num_classes
    per_class = M.per_class_accuracy(res.last_targets.numpy(), res.last_predictions.numpy(), n_classes)
    final = eval_metrics(R, L, b, n, R.shape[0] - 1)
    Lb = np.array(res.initial_losses) if res.initial_losses else None
    steps = history(R, L, b, Lb, n, result.timings.epochs, result.timings.eval_seconds)
    confusion = M.confusion_matrix(res.last_targets.numpy(), res.last_predictions.numpy(), n_classes)
    return {
        "strategy": result.strategy,
        "scenario": result.state.scenario.name,
        "kind": result.state.scenario.kind,
        "summary": M.summary(R, b, n),
        "accuracy_matrix": R.tolist(),
        "initial_accuracy": b.tolist(),
        "seen_accuracy": M.seen_accuracy(R, n).tolist(),
        "forgetting_per_experience": M.forgetting_per_experience(R).tolist(),
        "per_class_accuracy": [None if np.isnan(v) else float(v) for v in per_class],
        "avalanche": final,
        "avalanche_history": steps,
        "confusion_matrix": {"name": CONFUSION, "rows": "true class", "columns": "predicted class",
                             "counts": confusion.tolist()},
        "time": {"total_seconds": result.seconds, "train_seconds": result.timings.train_seconds,
                 "eval_seconds": result.timings.eval_seconds},
    }


def write_continual_files(folder: Path, result: Any, data: dict[str, Any]) -> None:
    """``accuracy_matrix.csv``, Avalanche ``CSVLogger``'s two files (cfs.evaluation.csvlog)
    and ``accuracy_matrix.png``."""
    R = np.array(result.state.results.rows)
    with open(Path(folder) / "accuracy_matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trained_exp"] + [f"exp{j}" for j in range(R.shape[1])])
        for i, row in enumerate(R):
            w.writerow([i] + [f"{v:.6f}" for v in row])
    write_avalanche_csvs(folder, data["avalanche_history"], R.shape[1])
    plots.plot_accuracy_matrix(R, Path(folder) / "accuracy_matrix.png",
                               f"{result.state.scenario.name} / {result.strategy}")


def _summary(key: str) -> Any:
    """A column's reader of one ``summary`` number (absent in older or partial runs: blank)."""
    return lambda r: r.metrics.get("summary", {}).get(key)


def summary_columns() -> list[Column]:
    """The summary numbers every accuracy-matrix run has, and its run time."""
    return [Column("final acc %", _summary("last_accuracy")),
            Column("avg inc acc %", _summary("average_incremental_accuracy")),
            Column("avg acc %", _summary("average_accuracy")),
            Column("forgetting %", _summary("forgetting")),
            Column("BWT %", _summary("backward_transfer")),
            Column("FWT %", _summary("forward_transfer")),
            Column("time s", lambda r: r.metrics.get("time", {}).get("total_seconds"), scale=1.0)]


def summary_table(runs: list[Any]) -> list[str]:
    """Markdown rows of the summary numbers (runs told apart by their differing settings, seed
    groups as mean ± std; see :func:`cfs.evaluation.report.metric_tables`)."""
    return metric_tables(runs, summary_columns())


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def matrix_figures(runs: list[Any], out: Path) -> list[tuple[str, Path]]:
    """One accuracy-matrix heatmap per run (``accuracy_matrix_<label>.png``; labels that map
    to the same file name get a number, so no run's plot overwrites another's)."""
    figures, used = [], set()
    for r in runs:
        if r.metrics.get("accuracy_matrix"):
            name, k = _safe(r.label), 2
            while name in used:
                name, k = f"{_safe(r.label)}_{k}", k + 1
            used.add(name)
            path = Path(out) / f"accuracy_matrix_{name}.png"
            R = np.array([[np.nan if v is None else v for v in row] for row in r.metrics["accuracy_matrix"]], float)
            plots.plot_accuracy_matrix(R, path, f"{r.metrics.get('scenario', '')} / {r.label}")
            figures.append((f"Accuracy matrix: {r.label}", path))
    return figures


def continual_report(runs: list[Any], out: Path) -> ReportSection:
    """The summary table; the accuracy on all seen classes after each experience (one line per
    run), the forgetting of each experience and every run's accuracy matrix."""
    figures: list[tuple[str, Path]] = []
    seen = [r for r in runs if r.metrics.get("seen_accuracy")]
    if seen:
        path = Path(out) / "seen_accuracy.png"
        plots.plot_lines({r.label: r.metrics["seen_accuracy"] for r in seen}, path,
                         "Accuracy on all seen classes after each experience", "experience", "accuracy (%)")
        figures.append(("Accuracy on all seen classes after each experience", path))
        forg = {r.label: r.metrics.get("forgetting_per_experience") or [] for r in seen}
        if any(forg.values()):
            path = Path(out) / "forgetting.png"
            plots.plot_grouped_bars(forg, path, "Forgetting per experience (max earlier accuracy - final)",
                                    "experience", "forgetting (%)")
            figures.append(("Forgetting per experience", path))
    return ReportSection("\n".join(summary_table(runs)), figures + matrix_figures(runs, out))
