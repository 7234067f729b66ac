"""Shared set-up of the continual-learning comparison scripts: a split-CIFAR-10 stream small
enough for a few CPU cores (a fixed per-class subset of the real images), cfs runs on it, and
the metrics table.

Everything that changes between strategies is the strategy: data subset, class order, backbone,
epochs, batch size, optimiser, seed and memory size are the same for all of them.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cfs.config import resolve
from cfs.data import load_dataset
from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.engine.runner import run_strategy
from cfs.evaluation import metrics
from cfs.plugins import get_plugin_manager
from cfs.scenarios.base import Scenario
from cfs.scenarios.builtin import build_class_incremental

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
PROTOCOL = Path(__file__).resolve().parent / "protocols" / "split-cifar10.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder holding cifar10-jpg/ (default: extract the shared archive to a temp dir)")
    p.add_argument("--train-per-class", type=int, default=150)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--backbone", default="resnet32")
    p.add_argument("--memory", type=int, default=200, help="exemplar budget of replay, iCaRL and DER++")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")


def cifar_root(args: argparse.Namespace) -> Path:
    """The data root; by default the offline archive extracted once into a fixed temporary
    folder (kept, so cfs's decoded-data cache, keyed by the folder, hits on later runs)."""
    if args.data_root:
        return Path(args.data_root)
    root = Path(tempfile.gettempdir()) / "cfs-cifar10-data"
    if not (root / "cifar10-jpg" / "test").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "xzf", str(SHARED), "-C", str(root)], check=True)
    return root


def per_class_subset(data: ArrayDataset, n: int, seed: int) -> ArrayDataset:
    """The first ``n`` images of each class after a seeded shuffle."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=g)
    keep = torch.cat([order[data.y[order] == c][:n] for c in range(data.num_classes)])
    return data.subset(keep.sort().values)


@dataclass
class Setting:
    data: DataSplit
    spec: dict
    args: argparse.Namespace

    def describe(self) -> str:
        a = self.args
        return (f"split-CIFAR-10 (real images), 5 experiences x 2 classes, class order seed 1993, "
                f"{a.train_per_class} train / {a.test_per_class} test images per class, {a.backbone}, "
                f"{a.epochs} epochs, batch {a.batch_size}, SGD lr {a.lr} momentum 0.9, crop+flip, "
                f"memory {a.memory}, seed {a.seed}, {a.threads} torch thread(s)")


def load_setting(args: argparse.Namespace) -> Setting:
    torch.set_num_threads(args.threads)
    full = load_dataset("cifar10", root=cifar_root(args))
    data = DataSplit(full.name, per_class_subset(full.train, args.train_per_class, args.seed),
                     per_class_subset(full.test, args.test_per_class, args.seed), full.mean, full.std)
    return Setting(data, {"name": "split-cifar10", **yaml.safe_load(PROTOCOL.read_text())}, args)


def cfs_config(setting: Setting, spec: str, options: dict | None = None):
    a = setting.args
    return resolve({"scenario": "split-cifar10", "strategies": [spec], "backbone": a.backbone, "epochs": a.epochs,
                    "batch_size": a.batch_size, "lr": a.lr, "momentum": 0.9, "weight_decay": 0.0, "schedule": "none",
                    "seed": a.seed, "device": "cpu", "options": options})


def scenario(setting: Setting, cfg) -> Scenario:
    return build_class_incremental(setting.spec, cfg, setting.data)


def summary(R: np.ndarray, n: np.ndarray) -> dict[str, float]:
    return {"final": metrics.last_accuracy(R, n), "avg_inc": metrics.average_incremental_accuracy(R, n),
            "forgetting": metrics.forgetting(R)}


def run_cfs(setting: Setting, spec: str, options: dict | None = None) -> dict[str, Any]:
    pm = get_plugin_manager([])
    cfg = cfs_config(setting, spec, options)
    t0 = time.perf_counter()
    result = run_strategy(pm, cfg, spec, scenario(setting, cfg), progress=False)
    seconds = time.perf_counter() - t0
    r = result.state.results
    out = summary(np.array(r.rows), np.array(r.test_sizes))
    out.update(seconds=seconds, train_seconds=sum(result.timings.train_seconds))
    return out


def table(rows: list[tuple[str, dict[str, Any]]], columns: list[tuple[str, str, str]]) -> str:
    """Rows of (name, values) under ``columns`` = (header, key, format)."""
    head = ["strategy"] + [c[0] for c in columns]
    body = [[name] + [format(v[k], f) if k in v else "-" for _, k, f in columns] for name, v in rows]
    widths = [max(len(str(r[i])) for r in [head] + body) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body])
