"""cfs never loses or mixes results (cfs.rundir): a foreign --out is refused before training,
concurrent writers cannot share a folder, default names never collide, a diverging run stops
with one line and keeps what it finished, a multi-strategy command resumes only what is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cfs.cli import main

QUICK = ["--strategy", "finetune", "--epochs", "1", "--no-progress"]


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cfs: error:"), lines
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (a killed run's stale, harmless ``.lock`` aside)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_foreign_folder_dot_file_and_symlink_are_refused_and_left_alone(tmp_path, capsys, monkeypatch):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    before = snapshot(tmp_path)
    for out, expected in ((foreign, "not empty and not a cfs run folder"), (a_file, "is a file"),
                          (link, "symbolic link")):
        assert main(["bench", *QUICK, "--out", str(out)]) == 2
        assert expected in one_error_line(capsys)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *QUICK, "--out", "."]) == 2
    assert "not empty" in one_error_line(capsys)
    assert snapshot(tmp_path) == before
    assert not any(target.iterdir())


def test_existing_run_needs_overwrite_which_keeps_foreign_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", *QUICK, "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "my-notes.md").write_text("mine")
    assert main(["bench", *QUICK, "--out", str(out)]) == 2
    assert "--overwrite" in one_error_line(capsys)
    assert main(["bench", *QUICK, "--seed", "3", "--out", str(out), "--overwrite"]) == 0
    assert (out / "my-notes.md").read_text() == "mine"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["seed"] == 3 and "threads" in info and "deterministic" in info


def _bench(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "cfs", "bench", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_two_concurrent_runs_into_one_folder_leave_one_run_and_one_error(tmp_path):
    args = ["--strategy", "replay", "--epochs", "4", "--no-progress", "--out", str(tmp_path / "shared")]
    procs = [_bench(args, tmp_path) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(text for code, text in results if code == 2).strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cfs: error:")
    assert json.loads((tmp_path / "shared" / "run.json").read_text())["status"] == "finished"


def test_two_concurrent_default_named_runs_both_survive(tmp_path):
    procs = [_bench(QUICK, tmp_path) for _ in range(2)]
    assert [p.wait() for p in procs] == [0, 0]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    assert all(json.loads((r / "run.json").read_text())["status"] == "finished" for r in runs)


def test_divergence_stops_with_one_line_naming_where_and_keeps_finished_experiences(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["bench", "--strategy", "finetune", "--epochs", "2", "--lr", "1e12", "--no-progress",
                 "--out", str(out)])
    line = one_error_line(capsys)
    assert code == 2 and "non-finite" in line and "strategy finetune" in line and "experience" in line
    assert "epoch" in line and "batch" in line
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and info["error"] in line
    assert "partial" in info  # the accuracies of experiences finished before it diverged


def test_skip_batch_finishes_and_counts(tmp_path):
    out = tmp_path / "run"
    assert main(["bench", "--strategy", "finetune", "--epochs", "1", "--lr", "1e12", "--on-nan", "skip-batch",
                 "--no-progress", "--out", str(out)]) in (0, 2)  # weights may still blow up: then stop
    info = json.loads((out / "run.json").read_text())
    assert info["status"] in ("finished", "failed")
    if info["status"] == "finished":
        assert info["skipped_batches"] > 0


def test_multi_strategy_resume_skips_finished_and_continues_the_rest(tmp_path):
    args = ["--strategy", "finetune", "--strategy", "replay", "--epochs", "6", "--checkpoint-epochs", "1",
            "--no-progress"]
    proc = _bench([*args, "--out", str(tmp_path / "killed")], tmp_path)
    ckpts = tmp_path / "killed" / "replay" / "checkpoints"
    while proc.poll() is None and not (ckpts.is_dir() and any(ckpts.glob("ckpt-*.pt"))):
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    finished = snapshot(tmp_path / "killed" / "finetune")
    done = subprocess.run([sys.executable, "-m", "cfs", "bench", "--resume", str(tmp_path / "killed"), "--no-progress"],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "finetune: finished before" in done.stderr
    assert snapshot(tmp_path / "killed" / "finetune") == finished  # untouched
    ref = subprocess.run([sys.executable, "-m", "cfs", "bench", *args, "--out", str(tmp_path / "ref")],
                         env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    assert ref.returncode == 0
    a = json.loads((tmp_path / "killed" / "replay" / "metrics.json").read_text())
    b = json.loads((tmp_path / "ref" / "replay" / "metrics.json").read_text())
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["summary"] == b["summary"]


@pytest.mark.parametrize("flag", [["--lr", "0.5"], ["-o", "replay.budget=10"], ["--seed", "4"]])
def test_resume_refuses_flags_that_change_the_result(tmp_path, capsys, flag):
    out = tmp_path / "run"
    assert main(["bench", *QUICK, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["bench", "--resume", str(out), *flag]) == 2
    assert "would change its result" in one_error_line(capsys)


def test_resume_may_extend_epochs_and_records_it(tmp_path):
    out = tmp_path / "run"
    proc = _bench(["--strategy", "replay", "--epochs", "4", "--checkpoint-epochs", "1", "--no-progress",
                   "--out", str(out)], tmp_path)
    ckpts = out / "checkpoints"
    while proc.poll() is None and not (ckpts.is_dir() and any(ckpts.glob("ckpt-*.pt"))):
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    done = subprocess.run([sys.executable, "-m", "cfs", "bench", "--resume", str(out), "--epochs", "6", "--no-progress"],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["resumed"][-1]["epochs"] == [4, 6]
    assert "epochs: 6" in (out / "config.yaml").read_text()
    shorter = subprocess.run([sys.executable, "-m", "cfs", "bench", "--resume", str(out), "--epochs", "2"],
                             env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    assert shorter.returncode == 2 and len(shorter.stderr.strip().splitlines()) == 1
