"""``cfs sweep`` end to end on split-digits (1 epoch, 2 seeds): on a local Ray instance the test
starts and stops, and on the local process pool. In each, one run's process is SIGKILLed after
its first checkpoint (``-p _sweep_kill``): the sweep still finishes every run, the killed one
resumed from its checkpoint; a second invocation skips every finished run (one with other flags
is refused); ``cfs report`` shows mean ± std over the seeds and ``seeds.csv`` holds the same
statistics unrounded."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import pytest

from cfs.cli import main

HERE = Path(__file__).resolve().parent
GRID = ["-p", "_sweep_kill", "sweep", "--strategy", "finetune", "--seeds", "0,1", "--epochs", "1",
        "--checkpoint-min-seconds", "0"]


@pytest.fixture
def kill_once(tmp_path, monkeypatch):
    """Arm the kill plugin (for this process, its children and a Ray instance started after)."""
    flag = tmp_path / "killed"
    monkeypatch.setenv("CFS_TEST_KILL_FLAG", str(flag))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return flag


def check_sweep(out: Path, flag: Path, report: Path, capsys) -> None:
    """Every run finished, exactly one was killed and resumed; a rerun skips them all; the
    report aggregates the seeds."""
    assert flag.exists()  # the kill happened
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["status"] for p in points] == ["finished", "finished"]
    killed = [p for p in points if p["attempts"] == 2]
    assert len(killed) == 1 and [p["attempts"] for p in points if p not in killed] == [1]
    assert killed[0]["resumed"] == 1
    log = (out / "logs" / f"{killed[0]['name']}.log").read_text()
    assert "(fresh)" in log and "(resume)" in log and f"--resume {out / killed[0]['name']}" in log
    info = json.loads((out / killed[0]["name"] / "run.json").read_text())
    assert info["status"] == "finished" and len(info["resumed"]) == 1
    assert not (out / killed[0]["name"] / "checkpoints").exists()

    capsys.readouterr()
    assert main([*GRID, "--backend", "local", "--out", str(out)]) == 0  # nothing left to run
    assert "2 finished before, skipped" in capsys.readouterr().err
    assert [p["attempts"] for p in json.loads((out / "sweep.json").read_text())["points"]] == \
        [p["attempts"] for p in points]
    assert main([*GRID, "--backend", "local", "--epochs", "2", "--out", str(out)]) == 2  # not the same runs
    assert "was started with other cfs bench flags" in capsys.readouterr().err

    assert main(["report", str(out), "--out", str(report)]) == 0
    text = capsys.readouterr().out
    assert "2 of 2 runs finished" in text
    row = next(line for line in text.splitlines() if line.startswith("| finetune | split-digits | 2 |"))
    finals = [p["summary"]["last_accuracy"] for p in points]
    mean, std = statistics.fmean(finals), statistics.stdev(finals)
    assert f"{100 * mean:.1f} ± {100 * std:.1f}" in row
    with open(report / "seeds.csv") as f:
        (group,) = list(csv.DictReader(f))
    assert group["seeds"] == "2" and group["seed_list"] == "0 1"
    assert float(group["last_accuracy_mean"]) == pytest.approx(mean)
    assert float(group["last_accuracy_std"]) == pytest.approx(std)
    with open(out / "sweep.csv") as f:
        assert [float(r["last_accuracy"]) for r in csv.DictReader(f)] == pytest.approx(finals)


def test_local_backend_survives_a_killed_run(tmp_path, kill_once, capsys):
    out = tmp_path / "sweep"
    assert main([*GRID, "--backend", "local", "--workers", "2", "--out", str(out)]) == 0
    check_sweep(out, kill_once, tmp_path / "report", capsys)


def test_ray_backend_survives_a_killed_worker(tmp_path, kill_once, capsys):
    ray = pytest.importorskip("ray", reason="the optional extra `ray` is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "sweep"
        assert main([*GRID, "--backend", "ray", "--retries", "1", "--out", str(out)]) == 0
        assert ray.is_initialized()  # a Ray instance the sweep did not start is left running
    finally:
        ray.shutdown()
    check_sweep(out, kill_once, tmp_path / "report", capsys)
