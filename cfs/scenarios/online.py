"""Online class-incremental learning: one pass over a stream of small incoming batches.

The stream is a class-incremental scenario's tasks one after the other, each task's training
data shuffled once; the run makes a **single pass** (``epochs`` must be 1), ``batch_size``
incoming samples at a time (10 by default in the online protocols, as in the MIR and ER-ACE
papers). The model is evaluated on the whole test set

* every ``eval_every`` incoming batches (the *anytime* evaluation points), and
* at the end of every task (the rows of the usual accuracy matrix, so the class-incremental
  metrics, forgetting included, apply unchanged).

``boundaries``: ``visible`` (default) runs each task as one experience of the continual loop
(``cfs_before_training_exp``/``cfs_after_training_exp`` mark the task changes and the head
grows as classes arrive); ``hidden`` hands the strategies **one** experience holding the whole
stream in its order, with a head over every class from the start (as the MIR code's fixed
10-way head), so no hook tells a strategy where a task ends. The loop still evaluates at the
task ends it knows; evaluation hooks (``cfs_before_eval``) fire at every evaluation point.

The loop is :class:`cfs.engine.continual.ContinualLoop` with two of its methods overridden:
:meth:`~OnlineLoop.batch_order` (the stream's order instead of a reshuffle) and
:meth:`~OnlineLoop.after_step` (the anytime evaluations); the optimisation step, the batch
with its provenance and every strategy hook are the engine's. A strategy that must act
differently online reads ``state.extra["online"]`` (the run's :class:`OnlineSetup`; absent in
other runs). Online runs are not checkpointed mid-stream.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.engine.continual import ContinualLoop
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.scenarios.base import Experience, Scenario
from cfs.scenarios.builtin import build_class_incremental

BOUNDARIES = ("visible", "hidden")


@dataclass
class OnlineSetup:
    """How the stream is evaluated and what the strategies see of its tasks."""

    #: evaluate every K incoming batches (0: only at the end of every task)
    eval_every: int = 100
    #: ``visible``: one experience per task; ``hidden``: one experience for the whole stream
    boundaries: str = "visible"

    def __post_init__(self) -> None:
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise CfsError(f"online eval_every must be an integer >= 0, got {self.eval_every!r}")
        if self.boundaries not in BOUNDARIES:
            raise CfsError(f"online boundaries must be one of {', '.join(BOUNDARIES)}, not {self.boundaries!r}")


@dataclass
class OnlineScenario(Scenario):
    """A class-incremental stream run online (kind ``online``)."""

    online: OnlineSetup = field(default_factory=OnlineSetup)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "online": dataclasses.asdict(self.online)}


def as_online(scenario: Scenario, eval_every: int = 100, boundaries: str = "visible") -> OnlineScenario:
    """The same stream (tasks, class order, transform) as an online scenario."""
    values = {f.name: getattr(scenario, f.name) for f in dataclasses.fields(Scenario)}
    values["kind"] = "online"
    return OnlineScenario(**values, online=OnlineSetup(eval_every, boundaries))


def check_online_config(cfg: Any) -> None:
    """Online learning sees every sample once (any other epoch count is a one-line error) and
    every evaluation point measures the whole test set (``--eval-seen-only`` does not apply)."""
    epochs = int(getattr(cfg, "epochs", 1))
    if epochs != 1:
        raise CfsError(f"online scenarios make a single pass over the stream: --epochs must be 1, not {epochs}")
    if getattr(cfg, "eval_seen_only", False):
        raise CfsError("--eval-seen-only does not apply to online scenarios: every evaluation point measures "
                       "the whole test set")


def build_online(spec: dict, cfg: Any, data: DataSplit) -> OnlineScenario:
    """A protocol file of ``kind: online``: the class-incremental stream of the same keys
    (data set, split, class order) plus its ``online:`` block (``eval_every``, ``boundaries``)."""
    check_online_config(cfg)
    block = dict(spec.get("online") or {})
    unknown = sorted(set(block) - {"eval_every", "boundaries"})
    if unknown:
        raise CfsError(f"protocol {spec.get('name')!r}: unknown online key {unknown[0]!r} (use eval_every, boundaries)")
    return as_online(build_class_incremental(spec, cfg, data), **block)


@dataclass
class AnytimePoint:
    """One evaluation in the stream: after ``batches`` incoming batches (``samples`` incoming
    samples), during task ``task``; ``accuracy[j]`` on task ``j``'s test data, ``seen`` on
    the test data of tasks ``0..task`` (sample-weighted); ``task_end`` for the matrix rows."""

    batches: int
    samples: int
    task: int
    accuracy: list[float]
    seen: float
    task_end: bool


class OnlineLoop(ContinualLoop):
    """The continual loop run as one pass over the stream with anytime evaluations."""

    def __init__(self, state: RunState, progress: bool = True) -> None:
        super().__init__(state, progress)
        self.setup: OnlineSetup = getattr(state.scenario, "online", None) or OnlineSetup()
        self.points: list[AnytimePoint] = []
        self.batches = 0
        self.samples = 0
        self.task = 0
        self._ends: list[int] = []  # hidden boundaries: the stream position where each task ends

    def run(self) -> RunState:
        s, h = self.state, self.hooks
        check_online_config(s.config)
        s.extra["online"] = self.setup
        s.extra["online_points"] = self.points
        h.cfs_before_run(state=s)
        s.results.initial, s.results.initial_losses = self.evaluate(record=False)
        exps = s.scenario.experiences
        if self.setup.boundaries == "hidden":
            t0 = time.perf_counter()
            self.train_experience(self._whole_stream(exps))
            self.timings.train_seconds.append(time.perf_counter() - t0)
            while self.task < len(exps):  # a task whose end the last batch reached (or an empty one)
                self._task_end()
        else:
            for exp in self.bars.bar(exps, desc="tasks", unit="task"):
                self.task = exp.index
                t0 = time.perf_counter()
                self.train_experience(exp)
                self.timings.train_seconds.append(time.perf_counter() - t0)
                self._task_end()
        h.cfs_after_run(state=s)
        return s

    def _whole_stream(self, exps: list[Experience]) -> Experience:
        """One experience holding every task's training data in task order, each task's rows
        shuffled once with the run's generator."""
        s = self.state
        parts = [e.train.subset(torch.randperm(len(e.train), generator=s.generator).to(e.train.y.device))
                 for e in exps]
        sizes = torch.tensor([len(p) for p in parts])
        self._ends = torch.cumsum(sizes, 0).tolist()
        classes = sorted(c for e in exps for c in e.classes)
        return Experience(0, classes, ArrayDataset.concat(parts), ArrayDataset.concat([e.test for e in exps]))

    def batch_order(self, n: int) -> torch.Tensor:
        """Hidden boundaries: the stream's own order (tasks one after the other); visible: one
        shuffle of the task's rows (the pass over a task is its only epoch)."""
        if self.setup.boundaries == "hidden":
            return torch.arange(n, device=self.state.device)
        return super().batch_order(n)

    def after_step(self) -> None:
        """Count the incoming batch; evaluate every ``eval_every`` batches and, with hidden
        boundaries, when the stream passes the end of a task."""
        s = self.state
        self.batches += 1
        self.samples += int(s.batch.n_drawn) if s.n_incoming_rows else 0
        if self.setup.boundaries == "hidden":
            while self.task < len(self._ends) - 1 and self.samples >= self._ends[self.task]:
                self._task_end()
        every = self.setup.eval_every
        if every and self.batches % every == 0 and not (self.points and self.points[-1].batches == self.batches):
            self._point(task_end=False)

    def _task_end(self) -> None:
        """The accuracy-matrix row of the task that just ended (recorded, ``cfs_after_eval``)."""
        if self.points and self.points[-1].batches == self.batches and not self.points[-1].task_end:
            self.points.pop()  # the same position: the task-end evaluation replaces it
        t0 = time.perf_counter()
        self._point(task_end=True)
        self.timings.eval_seconds.append(time.perf_counter() - t0)
        self.task += 1

    def _point(self, task_end: bool) -> None:
        s = self.state
        acc, _ = self.evaluate(record=task_end)
        sizes = s.results.test_sizes[: self.task + 1]
        seen = sum(a * n for a, n in zip(acc, sizes)) / max(sum(sizes), 1)
        self.points.append(AnytimePoint(self.batches, self.samples, self.task, acc, seen, task_end))
        if task_end:
            self.bars.note(f"task {self.task}: accuracy on the classes seen so far {100 * seen:.1f}% "
                           f"after {self.samples} incoming samples")
