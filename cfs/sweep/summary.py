"""The sweep summary: ``sweep.json`` (the grid, the backend and one record per point) and
``sweep.csv`` (one row per point), rewritten as each run ends, so a sweep in progress can be
watched and an interrupted one read.

A point's record is read from its run folder (``run.json`` status, error and resumptions,
``metrics.json`` summary and time) and its log (attempts), so it says what ``cfs bench``
wrote, not what the sweep hoped.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from cfs.rundir import read_json, write_json
from cfs.sweep.grid import Point
from cfs.sweep.worker import ATTEMPT_MARK

SUMMARY_JSON, SUMMARY_CSV = "sweep.json", "sweep.csv"
CSV_LEAD = ("name", "scenario", "strategy", "seed", "options", "status", "attempts", "resumed", "seconds", "error")


def attempts(log: Path) -> int:
    """How many times the run was started by this sweep (one header line per attempt)."""
    try:
        return log.read_text(errors="replace").count(ATTEMPT_MARK)
    except OSError:
        return 0


def point_record(point: Point, folder: Path, log: Path, bench_args: list[str],
                 result: dict[str, Any] | None = None) -> dict[str, Any]:
    """What is known of one point now; ``result``: what its task returned, if it ran."""
    info = read_json(folder / "run.json") or {}
    status = info.get("status") or "pending"
    record: dict[str, Any] = {"name": point.name, **point.to_dict(), "folder": folder.name,
                              "log": str(Path(log.parent.name) / log.name), "bench_args": bench_args,
                              "status": status, "attempts": attempts(log), "resumed": len(info.get("resumed") or [])}
    error = info.get("error") if status == "failed" else None
    if result is not None and result.get("rc") not in (0, None) and status != "failed":
        status, error = "failed", f"exit code {result['rc']}; see {record['log']}"
    if result is not None and result.get("rc") is None:
        status, error = "failed", result.get("error") or "its worker was lost"
    record.update(status=status, error=error)
    if status == "finished":
        metrics = read_json(folder / "metrics.json") or {}
        record["summary"] = metrics.get("summary") or {}
        record["seconds"] = (metrics.get("time") or {}).get("total_seconds")
    return record


def write_summary(out: Path, header: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """``sweep.json`` (atomically) and ``sweep.csv``: one row per point, the summary numbers
    of finished runs as columns (blank where a run has none)."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    write_json(out / SUMMARY_JSON, {**header, "counts": counts, "points": records})
    metric_keys: list[str] = []
    for r in records:
        metric_keys += [k for k in r.get("summary") or {} if k not in metric_keys]
    tmp = out / f".{SUMMARY_CSV}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*CSV_LEAD, *metric_keys])
        for r in records:
            row = [json.dumps(r[k], sort_keys=True) if k == "options" else r.get(k) for k in CSV_LEAD]
            values = [(r.get("summary") or {}).get(k) for k in metric_keys]
            w.writerow(["" if v is None else v for v in row]
                       + ["" if not isinstance(v, (int, float)) or not math.isfinite(v) else v for v in values])
    tmp.replace(out / SUMMARY_CSV)
