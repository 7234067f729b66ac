"""Write a run's results folder atomically.

Layout: ``config.yaml`` (resolved), ``run.json`` (versions, seed, device, class order,
plugins), ``metrics.json``, ``accuracy_matrix.csv``, Avalanche ``CSVLogger``-style
``eval_results.csv`` and ``training_results.csv``, and ``accuracy_matrix.png``. Everything
goes into a hidden sibling folder first and is renamed into place at the end, so an error
never leaves a half-written run folder.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import cfs
from cfs.engine.runner import RunResult
from cfs.evaluation import metrics as M
from cfs.evaluation.fscil import fscil_metrics
from cfs.evaluation.episodic import episodic_metrics, write_episodic_files
from cfs.evaluation.csvlog import write_avalanche_csvs
from cfs.evaluation.loggers import write_logs
from cfs.evaluation.names import CONFUSION, eval_metrics, history
from cfs.evaluation.plots import plot_accuracy_matrix


def default_run_dir(scenario: str, strategy: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{scenario}-{strategy}"


def versions() -> dict[str, str]:
    import numpy
    import pluggy
    import torch

    return {"cfs": cfs.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": numpy.__version__, "pluggy": pluggy.__version__, "platform": platform.platform()}


def run_metrics(result: RunResult) -> dict[str, Any]:
    """Every number of a run: summary metrics, matrix, per-class accuracy, Avalanche names."""
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
        **({"fscil": fscil_metrics(R, n)} if result.state.scenario.kind == "fscil" else {}),
        "time": {"total_seconds": result.seconds, "train_seconds": result.timings.train_seconds,
                 "eval_seconds": result.timings.eval_seconds},
    }


def _write_csvs(folder: Path, result: RunResult, data: dict[str, Any]) -> None:
    """``accuracy_matrix.csv`` plus Avalanche ``CSVLogger``'s two files (cfs.evaluation.csvlog)."""
    R = np.array(result.state.results.rows)
    with open(folder / "accuracy_matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trained_exp"] + [f"exp{j}" for j in range(R.shape[1])])
        for i, row in enumerate(R):
            w.writerow([i] + [f"{v:.6f}" for v in row])
    write_avalanche_csvs(folder, data["avalanche_history"], R.shape[1])


def write_run(result: RunResult, out: Path, plugins: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the folder for ``result`` at ``out`` and return its metrics."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state = result.state
        episodic = state.scenario.kind == "episodic"
        data = episodic_metrics(result) if episodic else run_metrics(result)
        (tmp / "config.yaml").write_text(yaml.safe_dump(state.config.to_dict(), sort_keys=False))
        info = {"versions": versions(), "seed": state.config.seed, "device": str(state.device),
                "strategy": result.strategy, "scenario": state.scenario.describe(),
                "class_names": state.scenario.class_names, "plugins": plugins or {}}
        (tmp / "run.json").write_text(json.dumps(info, indent=1))
        (tmp / "metrics.json").write_text(json.dumps(data, indent=1))
        if episodic:
            write_episodic_files(tmp, result)
        else:
            _write_csvs(tmp, result, data)
            plot_accuracy_matrix(np.array(state.results.rows), tmp / "accuracy_matrix.png",
                                 f"{state.scenario.name} / {result.strategy}")
        write_logs(tmp, data, getattr(state.config, "loggers", []))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return data
