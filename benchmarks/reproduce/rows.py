"""One ledger row = one JSON file in ``benchmarks/reproduce/results/``.

A row records a paper's (or an issue's) claim, the setting cfs could run, the exact command,
the per-seed numbers of every compared method and a verdict computed from them, so the ledger
table in REPRODUCIBILITY.md is generated (``ledger.py``), never typed. A row either compares
two measured methods (``expectation``) or one measured method with a number a paper published
(``reference``): the published number is kept as what it is, never dressed up as per-seed runs.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Reference:
    """A published number one measured method is held against."""

    #: the measured method (a key of ``Row.per_seed``)
    method: str
    #: the paper's number, in points (e.g. 98.7 for 98.7%)
    value: float
    #: how far (points, either side) cfs's mean and every seed may be from ``value`` to count as reproduced
    tolerance: float
    #: where the number is published (paper, table)
    source: str
    #: the paper's own +- (points) where it gives one
    plus_minus: float | None = None


@dataclass
class Row:
    """What one ledger row says."""

    id: str
    claim: str
    source: str
    setting: str
    command: str
    metric: str
    #: method -> one value per seed (same seeds for every method)
    per_seed: dict[str, list[float]]
    seeds: list[int]
    #: (method that should win, method it should beat, minimum margin in points); None for a
    #: row that holds one method against a published number (``reference``)
    expectation: tuple[str, str, float] | None = None
    gpu_command: str = ""
    notes: list[str] = field(default_factory=list)
    reference: Reference | None = None

    def __post_init__(self) -> None:
        if (self.expectation is None) == (self.reference is None):
            raise ValueError(f"row {self.id}: give exactly one of expectation (two methods) or "
                             f"reference (a published number)")
        wanted = self.expectation[:2] if self.expectation is not None else (self.reference.method,)
        missing = [m for m in wanted if m not in self.per_seed]
        if missing:
            raise ValueError(f"row {self.id}: no per-seed numbers for {missing}")

    def mean_std(self, method: str) -> tuple[float, float]:
        values = [100 * v for v in self.per_seed[method]]
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    def verdict(self) -> str:
        """``reproduced`` when the expected winner leads by at least the margin on the mean and
        in every seed; ``direction reproduced`` when it leads on the mean only; else
        ``not reproduced``. Against a published number: ``reproduced`` when the mean and every
        seed are within the tolerance of it, else ``not reproduced`` (a published number has no
        direction to reproduce)."""
        if self.reference is not None:
            ref = self.reference
            near = [abs(100 * v - ref.value) <= ref.tolerance for v in self.per_seed[ref.method]]
            mean_near = abs(self.mean_std(ref.method)[0] - ref.value) <= ref.tolerance
            return "reproduced" if mean_near and all(near) else "not reproduced"
        win, lose, margin = self.expectation
        gap = self.mean_std(win)[0] - self.mean_std(lose)[0]
        each = all(100 * (a - b) > 0 for a, b in zip(self.per_seed[win], self.per_seed[lose]))
        if gap >= margin and each:
            return "reproduced"
        if gap > 0:
            return "direction reproduced"
        return "not reproduced"

    def to_json(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict()
        data["summary"] = {m: list(self.mean_std(m)) for m in self.per_seed}
        return data


def write(row: Row, folder: Path = RESULTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{row.id}.json"
    path.write_text(json.dumps(row.to_json(), indent=1) + "\n")
    return path


def read_all(folder: Path = RESULTS) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
