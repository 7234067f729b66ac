"""Result loggers selected with ``--logger NAME`` (repeatable), registered with
``cfs_add_loggers`` like any plugin's: ``console``, ``jsonl``, ``tensorboard`` here.

A logger is a :class:`Logger`: ``write(folder, data)`` runs for every finished run, inside its
run folder before the folder is published (so a failing logger leaves nothing half-written),
from the run's metrics (the same values as ``metrics.json``), so every logger shows identical
numbers; ``finish(rows, kind)`` runs once after every run of a ``cfs bench``.

* ``console``: the scenario kind's table of ``cfs bench`` on standard output (the default);
* ``jsonl``: ``metrics.jsonl``, one JSON object per emitted step (Avalanche names, in
  Avalanche's order: the untrained eval, then each experience's epochs and its eval), then the
  kind's own block (``metrics.json`` key named after the kind, e.g. ``{"fscil": ...}``) if any,
  then one ``{"summary": ...}`` line;
* ``tensorboard``: event files under ``tensorboard/`` (``tensorboard --logdir RUN_DIR``), one
  scalar per Avalanche metric name; the x axis counts training epochs done, like Avalanche's
  ``train_iterations`` axis counts iterations. Needs the optional extra
  ``pip install 'cfs[tensorboard]'``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from cfs import hookimpl
from cfs.errors import CfsError
from cfs.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from cfs.kinds import ScenarioKind


class Logger:
    """Base class of a result logger; one instance is registered per ``--logger`` name."""

    name = ""

    def write(self, folder: Path, data: dict[str, Any]) -> None:
        """Write this logger's files for one finished run into its run folder; ``data`` is the
        run's ``metrics.json`` content."""

    def finish(self, rows: list[dict[str, Any]], kind: "ScenarioKind") -> None:
        """After every run of one ``cfs bench``: ``rows`` holds each run's metrics."""


def steps(data: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(x, entry)`` for every history entry; ``x`` = training epochs finished so far."""
    out, epochs = [], 0
    for entry in data.get("avalanche_history") or []:
        if entry["phase"] == "train":
            epochs += 1
        out.append((epochs, entry))
    return out


class Console(Logger):
    """The scenario kind's summary table on standard output (default)."""

    name = "console"

    def finish(self, rows: list[dict[str, Any]], kind: "ScenarioKind") -> None:
        print(kind.table(rows))


class JsonLines(Logger):
    """metrics.jsonl: one JSON object per step (Avalanche names), then the summary."""

    name = "jsonl"

    def write(self, folder: Path, data: dict[str, Any]) -> None:
        with open(Path(folder) / "metrics.jsonl", "w") as f:
            for x, entry in steps(data):
                f.write(json.dumps({"x": x, **entry}) + "\n")
            kind = data.get("kind")
            if isinstance(kind, str) and kind in data:
                f.write(json.dumps({kind: data[kind]}) + "\n")
            f.write(json.dumps({"summary": data.get("summary", {})}) + "\n")


class TensorBoard(Logger):
    """TensorBoard event files under tensorboard/ (pip install 'cfs[tensorboard]')."""

    name = "tensorboard"

    def write(self, folder: Path, data: dict[str, Any]) -> None:
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


@hookimpl
def cfs_add_loggers(registry: Registry) -> None:
    for logger in (Console(), JsonLines(), TensorBoard()):
        registry.add(logger)


def select_loggers(loggers: Registry, names: Iterable[str]) -> list[Logger]:
    """The registered loggers called ``names``; an unknown name is a one-line error naming the
    valid ones (checked before any work starts)."""
    out = []
    for name in names:
        if name not in loggers:
            raise CfsError(f"unknown logger {name!r} (valid: {', '.join(loggers)})")
        out.append(loggers.get(name))
    return out


def write_logs(folder: Path, data: dict[str, Any], loggers: Iterable[Logger]) -> None:
    """Run every selected logger's ``write`` on a run folder."""
    for logger in loggers:
        logger.write(folder, data)
