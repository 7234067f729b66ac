"""A run killed with SIGKILL at random points and resumed each time ends with the metrics of
an uninterrupted run, bit for bit (CPU): class-incremental replay, a composed derpp+lwf, and
an episodic MAML run. Corrupt checkpoints fall back to the previous one."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CASES = {
    "replay": ["--strategy", "replay", "--epochs", "6", "--checkpoint-epochs", "1"],
    "derpp+lwf": ["--strategy", "derpp+lwf", "--epochs", "6", "--checkpoint-epochs", "1"],
    "maml": ["-p", "_resume_scenarios", "--scenario", "informative-5w1s", "--strategy", "maml",
             "--meta-iterations", "80", "--val-interval", "4", "--checkpoint-min-seconds", "0"],
}


def env() -> dict[str, str]:
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", CFS_CACHE_DIR=os.environ.get("CFS_CACHE_DIR", ""))


def bench(*args: str) -> list[str]:
    return [sys.executable, "-m", "cfs", "bench", "--no-progress", *args]


def comparable(run: Path) -> dict:
    """Every number of a run except wall-clock times."""
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("time", None)
    for entry in metrics.get("avalanche_history") or []:
        entry["metrics"] = {k: v for k, v in entry["metrics"].items() if not k.startswith("Time_")}
    for key in ("avalanche",):
        if isinstance(metrics.get(key), dict):
            metrics[key] = {k: v for k, v in metrics[key].items() if not k.startswith("Time_")}
    for entry in metrics.get("train_log") or []:  # episodic: (iteration, loss, seconds)
        entry.pop("seconds", None)
    files = {p.name: p.read_text() for p in run.glob("*.csv") if p.name != "training_results.csv"}
    return {"metrics": metrics, "files": files}


def checkpoints(run: Path) -> list[int]:
    folder = run / "checkpoints"
    return sorted(int(p.stem[5:]) for p in folder.glob("ckpt-*.pt")) if folder.is_dir() else []


def kill_and_resume(args: list[str], out: Path, kills: int, rng: random.Random) -> int:
    """Start the run, SIGKILL it ``kills`` times (each after a fresh checkpoint appears, at a
    random moment), resuming in between; finish it; return how many kills landed."""
    landed = 0
    cmd = bench(*args, "--out", str(out))
    for _ in range(kills):
        before = max(checkpoints(out), default=0)
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while proc.poll() is None and max(checkpoints(out), default=0) <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.25))
        if proc.poll() is None:
            proc.kill()
            landed += 1
        proc.wait()
        cmd = bench("--resume", str(out))  # the -p modules it was started with are recorded in run.json
        if (out / "run.json").exists() and json.loads((out / "run.json").read_text()).get("status") == "finished":
            return landed
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return landed


@pytest.mark.parametrize("case", list(CASES))
def test_killed_and_resumed_equals_uninterrupted(tmp_path, case):
    args = CASES[case]
    ref = subprocess.run(bench(*args, "--out", str(tmp_path / "ref")), env=env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    landed = kill_and_resume(args, tmp_path / "killed", kills=3, rng=random.Random(case))
    assert landed >= 2  # the kills really interrupted the run
    killed = tmp_path / "killed"
    info = json.loads((killed / "run.json").read_text())
    assert info["status"] == "finished" and len(info["resumed"]) >= landed
    assert comparable(killed) == comparable(tmp_path / "ref")
    assert not (killed / "checkpoints").exists()  # a finished run keeps no checkpoint


def test_corrupt_last_checkpoint_falls_back_to_the_previous(tmp_path):
    args = CASES["replay"]
    out = tmp_path / "run"
    proc = subprocess.Popen(bench(*args, "--out", str(out)), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and len(checkpoints(out)) < 2:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    newest = out / "checkpoints" / f"ckpt-{max(checkpoints(out)):06d}.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated mid-write
    done = subprocess.run(bench("--resume", str(out)), env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ref = subprocess.run(bench(*args, "--out", str(tmp_path / "ref")), env=env(), capture_output=True, text=True)
    assert ref.returncode == 0
    assert comparable(out) == comparable(tmp_path / "ref")


def test_every_checkpoint_unreadable_is_one_line_and_keeps_the_folder(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(bench(*CASES["replay"], "--out", str(out)), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and len(checkpoints(out)) < 1:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    for n in checkpoints(out):
        (out / "checkpoints" / f"ckpt-{n:06d}.pt").write_bytes(b"not a checkpoint")
    before = sorted(p.name for p in out.rglob("*") if p.name != ".lock")
    done = subprocess.run(bench("--resume", str(out)), env=env(), capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no readable checkpoint" in lines[0]
    assert sorted(p.name for p in out.rglob("*") if p.name != ".lock") == before  # nothing lost
