"""Online continual-learning metrics (Caccia et al., 2022; Koh et al., 2022; Mai et al., 2022).

* **average anytime accuracy** (AAA): the mean, over the evaluation points of the stream
  (every K incoming batches and every task end), of the accuracy on the test data of the
  tasks seen so far;
* **final accuracy**: the accuracy on all test data after the last incoming batch;
* **forgetting**: Chaudhry et al.'s average forgetting over the task-end accuracy matrix
  (:func:`cfs.evaluation.metrics.forgetting`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cfs.evaluation import metrics as M


def average_anytime_accuracy(seen: Sequence[float]) -> float:
    """Mean of the seen-class accuracies at the evaluation points (NaN with no point)."""
    return float(np.mean(seen)) if len(seen) else float("nan")


def online_summary(R: np.ndarray, n: np.ndarray, seen: Sequence[float]) -> dict[str, float]:
    """The three online numbers from the task-end matrix ``R`` (``R[i, j]``: accuracy on task
    ``j`` after task ``i``), the test sizes ``n`` and the seen-class accuracy at every
    evaluation point (task ends included)."""
    return {"average_anytime_accuracy": average_anytime_accuracy(seen),
            "final_accuracy": M.last_accuracy(R, n),
            "forgetting": M.forgetting(R)}


def online_metrics(result: Any, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (the class-incremental metrics of the task-end matrix) plus the online section:
    the three numbers (also added to ``summary``) and every evaluation point."""
    res = result.state.results
    points = result.state.extra.get("online_points", [])
    section = online_summary(np.array(res.rows), np.array(res.test_sizes), [p.seen for p in points])
    data = dict(base)
    data["summary"] = {**base["summary"], "average_anytime_accuracy": section["average_anytime_accuracy"]}
    data["online"] = {**section, "setup": vars(result.state.extra["online"]).copy(),
                      "points": [vars(p).copy() for p in points]}
    data["time"] = data.pop("time")  # keep time last, as in every metrics.json
    return data


def online_table(rows: list[dict[str, Any]]) -> str:
    """The console table of ``cfs bench`` for online runs: final accuracy, average anytime
    accuracy and forgetting in percent, and the run time."""
    from cfs.evaluation.table import align

    table = [("strategy", "final acc %", "anytime acc %", "forgetting %", "time s")]
    for r in rows:
        o = r.get("online", {})
        table.append((r["strategy"], *(f"{100 * o[k]:.1f}" if k in o else "-"
                                       for k in ("final_accuracy", "average_anytime_accuracy", "forgetting")),
                      f"{r.get('time', {}).get('total_seconds', 0.0):.1f}"))
    return align(table)
