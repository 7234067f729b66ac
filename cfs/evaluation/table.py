"""Console tables of ``cfs bench`` (printed by the ``console`` logger), one row per run."""

from __future__ import annotations

from typing import Any


def align(table: list[tuple[str, ...]] | list[list[str]]) -> str:
    """Left-align the first column, right-align the rest, rule under the header."""
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    lines = []
    for k, row in enumerate(table):
        lines.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Final accuracy, average incremental accuracy, forgetting and time per strategy (percent)
    of accuracy-matrix runs; each scenario kind chooses its table (:meth:`cfs.kinds.ScenarioKind.table`)."""
    header = ("strategy", "final acc %", "avg inc acc %", "forgetting %", "time s")
    table = [header] + [(r["strategy"], f"{100 * r['summary']['last_accuracy']:.1f}",
                         f"{100 * r['summary']['average_incremental_accuracy']:.1f}",
                         f"{100 * r['summary']['forgetting']:.1f}", f"{r['time']['total_seconds']:.1f}") for r in rows]
    return align(table)
