"""The scenario-kind contract: everything the core needs to know about one setting.

A scenario has a *kind* (``class-incremental``, ``fscil``, ``episodic``, or whatever a plugin
registers with ``cfs_add_scenario_kinds``). The engine, the result writer, ``cfs bench`` and
``cfs report`` never compare kind names; they look the kind up in ``pm.kinds`` and ask it. A
new setting (online, task-incremental) is therefore a new :class:`ScenarioKind` registered by a
plugin, not a branch in the core::

    from cfs import hookimpl
    from cfs.kinds import ScenarioKind

    class Online(ScenarioKind):
        '''Online continual learning: one pass over the stream.'''
        name = "online"
        loop = OnlineLoop            # OnlineLoop(state, progress=...).run(); .timings

        def metrics(self, result):   # the dict stored as metrics.json
            ...

    @hookimpl
    def cfs_add_scenario_kinds(registry):
        registry.add(Online())

The first-party kinds live in :mod:`cfs.scenarios.kinds`; a kind may subclass another to
share its behaviour (FSCIL reuses the class-incremental loop and metrics).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from cfs.errors import CfsError

if TYPE_CHECKING:  # pragma: no cover
    from cfs.data.arrays import DataSplit
    from cfs.engine.runner import RunResult
    from cfs.engine.state import RunState
    from cfs.plugins import CfsPluginManager
    from cfs.registry import Registry
    from cfs.scenarios.base import Scenario


class Loop(Protocol):
    """What the runner drives: ``loop = kind.loop(state, progress=...)``, ``loop.run()``, then
    ``loop.timings`` (``train_seconds``, ``eval_seconds``, ``epochs``) for the writer."""

    timings: Any

    def __init__(self, state: "RunState", progress: bool = True) -> None: ...

    def run(self) -> Any: ...


@dataclass
class ReportSection:
    """A kind's part of ``cfs report``: Markdown (pipe tables and plain lines, also rendered
    into the HTML page) and the PNG figures it wrote, as (caption, path) in page order."""

    markdown: str = ""
    figures: list[tuple[str, Path]] = field(default_factory=list)


class ScenarioKind:
    """Base class of a scenario kind; one instance is registered per kind.

    Subclasses set :attr:`name` and :attr:`loop` and implement :meth:`metrics`; every other
    method has a generic default, so a minimal kind is three lines.
    """

    #: The kind's name: ``Scenario.kind``, the ``kind:`` of a protocol file and a value of
    #: ``Strategy.compatibility``.
    name: ClassVar[str] = ""
    #: The loop class that drives a scenario of this kind (see :class:`Loop`).
    loop: ClassVar[type]
    #: Whether ``--memory-format auto`` may pick channels-last for convolutional models on the
    #: CPU (not for loops that run models functionally, such as meta-learning).
    channels_last: ClassVar[bool] = True
    #: Whether ``--max-train-per-class`` may thin the training data of its protocol files.
    max_train_per_class: ClassVar[bool] = False

    def build(self, spec: dict, cfg: Any, data: "DataSplit") -> "Scenario":
        """Build a scenario from a protocol file's ``spec`` and its loaded data (for protocol
        files of ``kind: NAME``); kinds whose scenarios come from their own factories need not."""
        raise CfsError(f"scenario kind {self.name!r} cannot be built from a protocol file")

    def metrics(self, result: "RunResult") -> dict[str, Any]:
        """Every number of a finished run: the dict written as ``metrics.json``. It should hold
        ``strategy``, ``scenario``, ``summary`` (numbers) and ``time`` (``total_seconds``); the
        writer sets ``kind``."""
        raise NotImplementedError(f"scenario kind {self.name!r} defines no metrics")

    def write_files(self, folder: Path, result: "RunResult", data: dict[str, Any]) -> None:
        """Write extra result files (CSV, plots) into the run folder before it is published;
        ``data`` is what :meth:`metrics` returned."""

    def header(self, scenario: "Scenario", cfg: Any) -> str:
        """The line ``cfs bench`` prints about the scenario after its runs."""
        return f"scenario {scenario.name} ({self.name}): backbone {cfg.backbone}, seed {cfg.seed}"

    def table(self, rows: list[dict[str, Any]]) -> str:
        """The console table of ``cfs bench`` (the ``console`` logger), one row per run's
        metrics; by default every number of ``summary`` plus the run time."""
        from cfs.evaluation.table import align

        keys = sorted({k for r in rows for k, v in r.get("summary", {}).items() if isinstance(v, (int, float))})
        table = [("strategy", *keys, "time s")]
        for r in rows:
            s = r.get("summary", {})
            table.append((r["strategy"], *(f"{s[k]:.4g}" if k in s else "-" for k in keys),
                          f"{r.get('time', {}).get('total_seconds', 0.0):.1f}"))
        return align(table)

    def report(self, runs: list[Any], out: Path) -> ReportSection:
        """This kind's section of ``cfs report`` for its ``runs``
        (:class:`cfs.evaluation.report.Run`); figures go into ``out`` under names that start
        with the kind's name or a run label. By default a table of the summary numbers."""
        keys = sorted({k for r in runs for k, v in r.metrics.get("summary", {}).items() if isinstance(v, (int, float))})
        lines = [f"{self.name} runs:", "", "| run | scenario | " + " | ".join(keys) + " |",
                 "|---|---|" + "---:|" * len(keys)]
        for r in runs:
            s = r.metrics.get("summary", {})
            cells = " | ".join(f"{s[k]:.4g}" if k in s else "-" for k in keys)
            lines.append(f"| {r.label} | {r.metrics.get('scenario', '')} | {cells} |")
        return ReportSection("\n".join(lines))


def kind_for(kinds: "Registry", name: str | None, owner: str) -> ScenarioKind:
    """The registered kind called ``name``; an unregistered one is a one-line error that names
    ``owner`` (``"scenario 'x'"``, ``"run folder 'y'"``) and the registered kinds."""
    if name in kinds:
        return kinds.get(name)
    raise CfsError(f"{owner} has kind {name!r}, which no loaded plugin registers "
                   f"(registered kinds: {', '.join(kinds)}); load the plugin that defines it with -p MODULE")


@functools.lru_cache(maxsize=1)
def default_manager() -> "CfsPluginManager":
    """The first-party plugins (built-in modules and the ``cfs`` distribution's entry points),
    for callers that are not handed a manager: ``write_run(result, out)`` in a script, a
    protocol scenario called directly. Built once; its registries are only read."""
    from cfs.plugins import get_plugin_manager

    return get_plugin_manager(autoload=False)
