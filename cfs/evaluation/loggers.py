"""Result loggers selected with ``--logger NAME`` (repeatable): ``console``, ``jsonl``, ``tensorboard``.

Each file logger writes into the run folder from the finished run's metrics (the same values
as ``metrics.json``), so every logger shows identical numbers:

* ``console``: the summary table of ``cfs bench`` on standard output (the default);
* ``jsonl``: ``metrics.jsonl``, one JSON object per emitted step (Avalanche names, in
  Avalanche's order: the untrained eval, then each experience's epochs and its eval), then one
  ``{"summary": ...}`` line;
* ``tensorboard``: event files under ``tensorboard/`` (``tensorboard --logdir RUN_DIR``), one
  scalar per Avalanche metric name; the x axis counts training epochs done, like Avalanche's
  ``train_iterations`` axis counts iterations. Needs the optional extra
  ``pip install 'cfs[tensorboard]'``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

from cfs.errors import CfsError

LOGGER_NAMES = ("console", "jsonl", "tensorboard")


def check_loggers(names: Iterable[str]) -> list[str]:
    """Validate logger names (unknown -> CfsError naming the valid ones)."""
    names = list(names)
    for name in names:
        if name not in LOGGER_NAMES:
            raise CfsError(f"unknown logger {name!r} (valid: {', '.join(LOGGER_NAMES)})")
    return names


def steps(data: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(x, entry)`` for every history entry; ``x`` = training epochs finished so far."""
    out, epochs = [], 0
    for entry in data.get("avalanche_history") or []:
        if entry["phase"] == "train":
            epochs += 1
        out.append((epochs, entry))
    return out


def write_jsonl(folder: Path, data: dict[str, Any]) -> None:
    with open(Path(folder) / "metrics.jsonl", "w") as f:
        for x, entry in steps(data):
            f.write(json.dumps({"x": x, **entry}) + "\n")
        for key in ("fscil", "episodic"):
            if key in data:
                f.write(json.dumps({key: data[key]}) + "\n")
        f.write(json.dumps({"summary": data.get("summary", {})}) + "\n")


def write_tensorboard(folder: Path, data: dict[str, Any]) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CfsError("--logger tensorboard needs the tensorboard package: pip install 'cfs[tensorboard]'") from None
    writer = SummaryWriter(log_dir=str(Path(folder) / "tensorboard"))
    try:
        for x, entry in steps(data):
            for name, value in entry["metrics"].items():
                writer.add_scalar(name, value, x)
        for i, acc in enumerate(data.get("seen_accuracy") or []):
            writer.add_scalar("cfs/seen_accuracy", acc, i)
        for name, value in (data.get("summary") or {}).items():
            if isinstance(value, (int, float)):
                writer.add_scalar(f"cfs/summary/{name}", value, 0)
    finally:
        writer.close()


FILE_LOGGERS: dict[str, Callable[[Path, dict[str, Any]], None]] = {"jsonl": write_jsonl,
                                                                   "tensorboard": write_tensorboard}


def write_logs(folder: Path, data: dict[str, Any], names: Iterable[str]) -> None:
    """Run every selected file logger on a run folder (``console`` prints elsewhere)."""
    for name in check_loggers(names):
        if name in FILE_LOGGERS:
            FILE_LOGGERS[name](folder, data)
