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
from cfs.evaluation.episodic import episodic_metrics, write_episodic_files
from cfs.evaluation.names import eval_metrics, train_epoch_names
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
        "time": {"total_seconds": result.seconds, "train_seconds": result.timings.train_seconds,
                 "eval_seconds": result.timings.eval_seconds},
    }


def _write_csvs(folder: Path, result: RunResult) -> None:
    res = result.state.results
    R, L = np.array(res.rows), np.array(res.losses)
    b, n = np.array(res.initial), np.array(res.test_sizes)
    with open(folder / "accuracy_matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trained_exp"] + [f"exp{j}" for j in range(R.shape[1])])
        for i, row in enumerate(R):
            w.writerow([i] + [f"{v:.6f}" for v in row])
    with open(folder / "eval_results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric_name", "training_exp", "eval_exp", "eval_accuracy", "eval_loss", "forgetting"])
        for i in range(R.shape[0]):
            for j in range(R.shape[1]):
                forgetting = R[j, j] - R[i, j] if j < i else 0.0
                w.writerow(["Top1_Acc_Exp", i, j, f"{R[i, j]:.4f}", f"{L[i, j]:.4f}", f"{forgetting:.4f}"])
    acc_name, loss_name, _ = train_epoch_names()
    with open(folder / "training_results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric_name", "training_exp", "epoch", "training_accuracy", "val_accuracy", "training_loss", "val_loss"])
        for e in result.timings.epochs:
            w.writerow([acc_name.split("/")[0], e.experience, e.epoch, f"{e.accuracy:.4f}", "0", f"{e.loss:.4f}", "0"])


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
            _write_csvs(tmp, result)
            plot_accuracy_matrix(np.array(state.results.rows), tmp / "accuracy_matrix.png",
                                 f"{state.scenario.name} / {result.strategy}")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return data
