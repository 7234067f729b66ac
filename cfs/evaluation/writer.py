"""Write a run's results folder atomically.

Layout: ``config.yaml`` (resolved), ``run.json`` (versions, seed, device, class order,
plugins), ``metrics.json`` (what the scenario's kind measures, :meth:`ScenarioKind.metrics`),
the kind's own files (for class-incremental and FSCIL runs ``accuracy_matrix.csv``, Avalanche
``CSVLogger``-style ``eval_results.csv`` and ``training_results.csv``, and
``accuracy_matrix.png``) and the selected loggers' files. Everything goes into a hidden sibling
folder first and is renamed into place at the end, so an error never leaves a half-written run
folder.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import yaml

import cfs
from cfs.engine.runner import RunResult
from cfs.evaluation.loggers import Logger, select_loggers, write_logs
from cfs.errors import CfsError
from cfs.kinds import ScenarioKind, default_manager, kind_for
from cfs.rundir import describe_environment, read_json, write_json


def versions() -> dict[str, str]:
    import numpy
    import pluggy
    import torch

    return {"cfs": cfs.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": numpy.__version__, "pluggy": pluggy.__version__, "platform": platform.platform()}


def _kind(result: RunResult, kind: ScenarioKind | None) -> ScenarioKind:
    scenario = result.state.scenario
    return kind if kind is not None else kind_for(default_manager().kinds, scenario.kind, f"scenario {scenario.name!r}")


def run_metrics(result: RunResult, kind: ScenarioKind | None = None) -> dict[str, Any]:
    """Every number of a run, as its scenario's kind measures it (``kind``: the registered
    kind; by default the first-party kind of that name); ``kind`` is always recorded."""
    kind = _kind(result, kind)
    data = kind.metrics(result)
    data["kind"] = kind.name
    return data


def write_run(result: RunResult, out: Path, plugins: dict[str, str] | None = None,
              kind: ScenarioKind | None = None, loggers: Sequence[Logger] | None = None) -> dict[str, Any]:
    """Write the results of ``result`` into the run folder ``out`` and return its metrics.

    ``kind``: the scenario's registered kind and ``loggers``: the selected loggers, as the
    caller's plugin manager has them; by default the first-party ones (the loggers named in
    the run's config).

    A new ``out`` is written as a hidden sibling and renamed into place. An existing ``out``
    (the run folder ``cfs bench`` created, locked and marked ``running``) gets its files from a
    hidden temporary folder inside it, moved in one by one, and ``run.json`` with
    ``status: finished`` last: a folder whose run.json is not finished is not a result. Nothing
    else in ``out`` is touched."""
    out = Path(out)
    kind = _kind(result, kind)
    state = result.state
    if loggers is None:
        loggers = select_loggers(default_manager().loggers, getattr(state.config, "loggers", []))
    if out.exists() and not out.is_dir():
        raise CfsError(f"cannot write results to {out}: it is a file")
    in_place = out.is_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".results-", dir=out) if in_place
               else tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        data = run_metrics(result, kind)
        (tmp / "config.yaml").write_text(yaml.safe_dump(state.config.to_dict(), sort_keys=False))
        (tmp / "metrics.json").write_text(json.dumps(data, indent=1))
        kind.write_files(tmp, result, data)
        write_logs(tmp, data, loggers)
        previous = read_json(out / "run.json") or {} if in_place else {}
        info = {"versions": versions(), "seed": state.config.seed, "device": str(state.device),
                "strategy": result.strategy, "scenario": state.scenario.describe(),
                "class_names": state.scenario.class_names, "plugins": plugins or {}, **describe_environment(state.config),
                **{k: previous[k] for k in ("started", "resumed", "plugin_args") if k in previous},
                "skipped_batches": state.extra.get("skipped_batches", 0),
                "status": "finished", "files": sorted(p.name for p in tmp.iterdir()) + ["run.json"]}
        if in_place:
            for entry in tmp.iterdir():
                dest = out / entry.name
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                os.replace(entry, dest)
            tmp.rmdir()
            write_json(out / "run.json", info)  # last: the run is finished when this says so
        else:
            (tmp / "run.json").write_text(json.dumps(info, indent=1))
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return data
