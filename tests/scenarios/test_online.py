"""The online kind (cfs.scenarios.online): one pass, evaluation points, online metrics, every
online strategy runs and ER beats fine-tuning, --class-order recorded and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cfs import hookimpl, testing
from cfs.cli import main
from cfs.errors import CfsError
from cfs.evaluation.online import average_anytime_accuracy, online_summary
from cfs.registry import Registry
from cfs.scenarios.online import as_online
from cfs.strategy import Strategy


class Recorder(Strategy):
    """Records, per incoming batch, the experience, the rows drawn and their labels."""

    name = "recorder"
    compatibility = frozenset({"online"})

    def __init__(self, options=None):
        super().__init__(options)
        self.batches: list[tuple[int, list[int], list[int]]] = []
        self.boundaries = 0

    @hookimpl
    def cfs_before_training_exp(self, state):
        self.boundaries += 1

    @hookimpl
    def cfs_after_batch(self, state):
        b = state.batch
        self.batches.append((state.experience_index, b.incoming_index.tolist(), b.y[b.incoming].tolist()))


class Plugin:
    @staticmethod
    @hookimpl
    def cfs_add_strategies(registry: Registry) -> None:
        registry.add(Recorder)


def stream(boundaries: str = "visible", eval_every: int = 5, **kw):
    # 3 tasks x 2 classes x 60 samples: 12 batches of 10 per task
    return as_online(testing.synthetic_stream(**kw), eval_every=eval_every, boundaries=boundaries)


def run(spec: str, scenario, **config):
    config = {"batch_size": 10, "lr": 0.1, **config}
    return testing.run(spec, plugins=[Plugin], scenario=scenario, epochs=1, **config)


@pytest.mark.parametrize("boundaries", ["visible", "hidden"])
def test_single_pass_sees_every_sample_once_in_task_order(boundaries):
    result = run("recorder", stream(boundaries))
    rec = result.state.strategy("recorder")
    sizes = [len(e.train) for e in result.state.scenario.experiences]
    assert all(len(rows) == 10 for _, rows, _ in rec.batches)
    labels = [y for _, _, ys in rec.batches for y in ys]
    tasks = [y // 2 for y in labels]
    assert tasks == sorted(tasks)  # the stream never goes back to an earlier task
    if boundaries == "visible":
        assert rec.boundaries == 3
        for exp, size in enumerate(sizes):
            rows = [r for e, rs, _ in rec.batches if e == exp for r in rs]
            assert sorted(rows) == list(range(size))  # every sample of the task once
    else:
        assert rec.boundaries == 1  # one experience: no hook marks a task change
        rows = [r for _, rs, _ in rec.batches for r in rs]
        assert sorted(rows) == list(range(sum(sizes)))
    assert len(labels) == sum(sizes)


@pytest.mark.parametrize("boundaries", ["visible", "hidden"])
def test_evaluation_points_every_k_batches_and_at_task_ends(boundaries):
    result = run("finetune", stream(boundaries, eval_every=5))
    points = result.state.extra["online_points"]
    assert [p.batches for p in points] == [5, 10, 12, 15, 20, 24, 25, 30, 35, 36]
    assert [p.batches for p in points if p.task_end] == [12, 24, 36]
    assert [p.task for p in points] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert len(result.state.results.rows) == 3  # the task-end matrix
    n = result.state.results.test_sizes
    for p in points:  # seen accuracy: sample-weighted over the tasks seen so far
        expect = sum(a * s for a, s in zip(p.accuracy[: p.task + 1], n)) / sum(n[: p.task + 1])
        assert p.seen == pytest.approx(expect)
    for p, row in zip([p for p in points if p.task_end], result.state.results.rows):
        assert p.accuracy == row


def test_online_metrics_by_hand():
    R = np.array([[0.9, 0.0, 0.0], [0.5, 0.8, 0.0], [0.3, 0.6, 0.7]])
    n = np.array([10, 10, 20])
    seen = [0.5, 0.9, 0.7, 0.65, 0.575]
    out = online_summary(R, n, seen)
    assert out["final_accuracy"] == pytest.approx((0.3 * 10 + 0.6 * 10 + 0.7 * 20) / 40)  # 0.575
    assert out["forgetting"] == pytest.approx(((0.9 - 0.3) + (0.8 - 0.6)) / 2)  # 0.4
    assert out["average_anytime_accuracy"] == pytest.approx(sum(seen) / 5)  # 0.665
    assert np.isnan(average_anytime_accuracy([]))


def test_metrics_json_of_an_online_run(tmp_path):
    out = tmp_path / "run"
    assert main(["bench", "--scenario", "online-split-digits", "--strategy", "er", "--out", str(out),
                 "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    points = m["online"]["points"]
    assert m["online"]["average_anytime_accuracy"] == pytest.approx(np.mean([p["seen"] for p in points]))
    assert m["summary"]["average_anytime_accuracy"] == m["online"]["average_anytime_accuracy"]
    assert m["online"]["final_accuracy"] == pytest.approx(m["summary"]["last_accuracy"])
    assert m["online"]["setup"] == {"eval_every": 20, "boundaries": "visible"}
    info = json.loads((out / "run.json").read_text())
    assert info["scenario"]["kind"] == "online" and info["scenario"]["class_order_from"]["mode"] == "seed"


def test_every_strategy_runs_online_and_er_beats_finetune():
    sc = stream("visible", eval_every=6, per_class=80, spread=0.8)
    final = {}
    for spec in ("finetune", "er", "er-ace", "gdumb", "mir"):
        options = {"gdumb": {"online_epochs": 3}} if spec == "gdumb" else None
        final[spec] = testing.final_accuracy(run(spec, sc, options=options))
    assert final["er"] >= final["finetune"] + 0.25, final
    for spec in ("er", "er-ace", "gdumb", "mir"):
        assert final[spec] > 0.6, final  # 6 classes: chance is 1/6


def test_hidden_boundaries_head_covers_every_class_from_the_start():
    result = run("er", stream("hidden"))
    assert result.state.model.head.out_features == 6
    assert result.state.experience.classes == list(range(6))


def test_online_needs_a_single_pass():
    with pytest.raises(CfsError, match="single pass"):
        testing.run("finetune", scenario=stream(), epochs=2)
    with pytest.raises(CfsError, match="eval-seen-only"):
        testing.run("finetune", scenario=stream(), epochs=1, eval_seen_only=True)
    with pytest.raises(CfsError, match="boundaries"):
        as_online(testing.synthetic_stream(), boundaries="sometimes")


def test_class_order_file_recorded_in_run_json(tmp_path):
    order = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
    path = tmp_path / "order.txt"
    path.write_text(" ".join(map(str, order)) + "\n")
    out = tmp_path / "run"
    assert main(["bench", "--scenario", "online-split-digits", "--strategy", "finetune", "--class-order",
                 f"file:{path}", "--out", str(out), "--no-progress"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["scenario"]["class_order"] == order
    assert info["scenario"]["class_order_from"] == {"mode": "file", "path": str(path)}
    assert f"class_order: file:{path}" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("value, message", [
    ("bogus", "bad --class-order bogus: use seed, curriculum or file:PATH"),
    ("file:", "bad --class-order file:"),
    ("file:/no/such/order.txt", "no such file"),
    ("file:{short}", "must be a permutation of 0..9"),
    ("file:{words}", "not a list of integer class ids"),
])
def test_bad_class_order_is_one_line(tmp_path, capsys, value, message):
    (tmp_path / "short.txt").write_text("0 1 2\n")
    (tmp_path / "words.txt").write_text("cat dog\n")
    value = value.format(short=tmp_path / "short.txt", words=tmp_path / "words.txt")
    out = tmp_path / "run"
    assert main(["bench", "--scenario", "split-digits", "--strategy", "finetune", "--class-order", value,
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()  # before any work
