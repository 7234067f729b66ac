"""Reading finished ``cfs bench`` episodic run folders and pairing two methods per test episode.

cfs draws a run's validation and test episodes from the run seed only, so two strategies of the
same seed are tested on the same episodes; a per-episode difference is then a paired
comparison, much tighter than the difference of two means. The few-shot ledger scripts
(``fewshot.py``, ``stn.py``) share these helpers.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2, like cfs's own user errors."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def episodic_metrics(run: Path) -> dict:
    """``metrics.json`` of a finished episodic run folder; a clear error when it is missing."""
    path = run / "metrics.json"
    if not path.is_file():
        fail(f"no finished run at {run} (missing metrics.json): run without --collect first")
    metrics = json.loads(path.read_text())
    if metrics.get("kind") != "episodic" or "episode_accuracy" not in metrics:
        fail(f"{path} is not an episodic run's metrics (no per-episode accuracies)")
    return metrics


@dataclass
class Paired:
    """Per-episode differences ``a - b`` (points) pooled over seeds."""

    a: str
    b: str
    #: per seed: (seed, mean difference, number of episodes)
    per_seed: list[tuple[int, float, int]]
    differences: list[float]

    @property
    def wins(self) -> int:
        return sum(d > 0 for d in self.differences)

    @property
    def losses(self) -> int:
        return sum(d < 0 for d in self.differences)

    @property
    def mean(self) -> float:
        return statistics.mean(self.differences)

    @property
    def ci95(self) -> float:
        """Half-width of the normal 95% interval of the pooled mean difference."""
        return 1.96 * statistics.stdev(self.differences) / len(self.differences) ** 0.5

    def short(self) -> str:
        """The paired result in a few words, for a row's rendered setting (notes are not rendered)."""
        return (f"paired {self.a} minus {self.b} over the same {len(self.differences)} test episodes: "
                f"{self.mean:+.2f} +- {self.ci95:.2f} points (95% CI), {self.a} better on {self.wins}, "
                f"worse on {self.losses}")

    def note(self) -> str:
        """One line for a row's notes: pooled mean +- std, per seed means, wins/ties/losses."""
        d = self.differences
        mean, std = self.mean, statistics.stdev(d)
        seeds = ", ".join(f"seed {s}: {m:+.2f} ({n} episodes)" for s, m, n in self.per_seed)
        return (f"paired over the same test episodes, {self.a} minus {self.b}: {mean:+.2f} +- {std:.2f} points "
                f"(mean +- std over {len(d)} episodes pooled from {len(self.per_seed)} seeds; 95% CI of the mean "
                f"+-{self.ci95:.2f}); {seeds}; {self.a} better on {self.wins} episodes, worse on "
                f"{self.losses}, tied on {len(d) - self.wins - self.losses}")


def paired(a: str, b: str, runs: dict[int, tuple[dict, dict]]) -> Paired:
    """Pair ``a``'s and ``b``'s metrics (``runs[seed] = (metrics_a, metrics_b)``) episode by episode;
    refuses runs whose episode counts differ (they were not tested on the same episodes)."""
    per_seed, diffs = [], []
    for seed, (ma, mb) in sorted(runs.items()):
        ea, eb = ma["episode_accuracy"], mb["episode_accuracy"]
        if len(ea) != len(eb):
            fail(f"seed {seed}: {a} has {len(ea)} test episodes, {b} {len(eb)}: not paired")
        d = [100 * (x - y) for x, y in zip(ea, eb)]
        per_seed.append((seed, statistics.mean(d), len(d)))
        diffs += d
    return Paired(a, b, per_seed, diffs)
