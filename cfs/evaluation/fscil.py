"""FSCIL metrics from the accuracy matrix: per-session accuracy over all seen classes, its
average, the performance drop and the base/novel split (TOPIC/CEC/TEEN reporting).

``R[s, j]`` is the accuracy on session ``j``'s test images after session ``s`` and ``n[j]`` the
number of those images; session 0 holds the base classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cfs.evaluation import plots
from cfs.evaluation.continual import matrix_figures, summary_table
from cfs.evaluation.metrics import seen_accuracy
from cfs.evaluation.report import Column, metric_tables
from cfs.kinds import ReportSection


def novel_accuracy(R: np.ndarray, n: np.ndarray) -> np.ndarray:
    """After each session, the accuracy on the test images of the novel classes seen so far
    (NaN after the base session, which has none)."""
    R, n = np.asarray(R, float), np.asarray(n, float)
    out = [np.nan]
    for s in range(1, R.shape[0]):
        out.append(float((R[s, 1 : s + 1] * n[1 : s + 1]).sum() / n[1 : s + 1].sum()))
    return np.array(out)


def harmonic_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2ab/(a+b) elementwise (0 where both are 0, NaN where either is NaN)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a + b > 0, 2 * a * b / (a + b), 0.0) + 0 * (a + b)


def fscil_metrics(R: np.ndarray, n: np.ndarray) -> dict[str, Any]:
    """Per-session accuracy, average, PD = first - last, base/novel accuracy and their HM."""
    R = np.asarray(R, float)
    acc = seen_accuracy(R, n)
    base = R[:, 0]
    novel = novel_accuracy(R, n)
    hm = harmonic_mean(base, novel)

    def clean(v: np.ndarray) -> list[float | None]:
        return [None if np.isnan(x) else float(x) for x in v]

    return {
        "session_accuracy": clean(acc),
        "average_accuracy": float(acc.mean()),
        "performance_drop": float(acc[0] - acc[-1]),
        "base_accuracy": clean(base),
        "novel_accuracy": clean(novel),
        "harmonic_mean": clean(hm),
    }


def session_table(metrics: dict[str, Any], strategy: str) -> str:
    """A per-session table (accuracy on all seen classes, base, novel, HM) in percent."""
    n = len(metrics["session_accuracy"])

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    rows = [["session"] + [str(s) for s in range(n)] + ["avg", "PD"],
            ["all %"] + [pct(v) for v in metrics["session_accuracy"]]
            + [pct(metrics["average_accuracy"]), pct(metrics["performance_drop"])],
            ["base %"] + [pct(v) for v in metrics["base_accuracy"]] + ["", ""],
            ["novel %"] + [pct(v) for v in metrics["novel_accuracy"]] + ["", ""],
            ["HM %"] + [pct(v) for v in metrics["harmonic_mean"]] + ["", ""]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{strategy}:"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def _session(k: int) -> Any:
    """A column's reader of session ``k`` (runs with fewer sessions leave it blank)."""
    return lambda r: r.metrics["fscil"]["session_accuracy"][k]


def fscil_report(runs: list[Any], out: Path) -> ReportSection:
    """The summary table, the accuracy on all seen classes after each session (table and
    ``fscil_sessions.png``) and every run's accuracy matrix; seed groups as mean ± std."""
    n = max(len(r.metrics["fscil"]["session_accuracy"]) for r in runs)
    columns = [Column(f"s{k}", _session(k)) for k in range(n)]
    columns += [Column("avg", lambda r: r.metrics["fscil"].get("average_accuracy")),
                Column("PD", lambda r: r.metrics["fscil"].get("performance_drop"))]
    lines = summary_table(runs) + ["", "FSCIL accuracy on all seen classes after each session (%):", ""]
    lines += metric_tables(runs, columns, scenario=False)
    path = Path(out) / "fscil_sessions.png"
    plots.plot_lines({r.label: r.metrics["fscil"]["session_accuracy"] for r in runs}, path,
                     "FSCIL: accuracy on all seen classes per session", "session", "accuracy (%)")
    return ReportSection("\n".join(lines), [("FSCIL per-session accuracy", path)] + matrix_figures(runs, out))
