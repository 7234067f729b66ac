"""One run on two processes (torchrun, gloo on the CPU): finetune, replay, iCaRL and MAML end
with the same weights, memories and results on both ranks, match the single-process run within
a stated tolerance, and ``cfs bench`` writes one run folder (from rank 0) in the usual format.
The sharding arithmetic and the up-front checks are tested without processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import _distributed_worker as worker
from cfs.cli import main
from cfs.engine import distributed

HERE = Path(__file__).parent
#: |accuracy on 2 ranks - accuracy in 1 process|, per experience and for MAML's mean: the
#: global batch and the averaged gradient are the single process's, so only the order of
#: floating-point sums and the augmentation draws differ (split-digits and the synthetic
#: few-shot data have no augmentation, so they agree to float precision here)
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("two-ranks")
    (out / "cli").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [
        str(HERE), os.environ.get("PYTHONPATH")]))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "_distributed_worker.py"), str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        single = worker.run_all()  # the same runs in this process while the ranks work
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return out, ranks, single


def test_both_ranks_end_with_the_same_weights_memories_and_results(two_ranks):
    _, (r0, r1), _ = two_ranks
    assert (r0["world_size"], r0["rank"], r1["rank"]) == (2, 0, 1)
    for spec in (*worker.CONTINUAL, "maml"):
        a, b = r0["runs"][spec], r1["runs"][spec]
        assert a["model"] == b["model"], spec
        assert a["strategies"] == b["strategies"], spec  # replay's and iCaRL's memories, iCaRL's means
        assert a["rows"] == b["rows"] and a["episodic"] == b["episodic"], spec


def test_two_ranks_match_one_process_within_tolerance(two_ranks):
    _, (r0, _), single = two_ranks
    for spec in worker.CONTINUAL:
        dist_rows, one_rows = r0["runs"][spec]["rows"], single[spec]["rows"]
        assert len(dist_rows) == len(one_rows) == 5
        assert max(abs(a - b) for a, b in zip(dist_rows[-1], one_rows[-1])) <= TOLERANCE, spec
        dist_epochs, one_epochs = r0["runs"][spec]["epochs"], single[spec]["epochs"]
        assert [abs(a[0] - b[0]) < 1e-3 * max(1.0, abs(b[0])) for a, b in zip(dist_epochs, one_epochs)] == \
               [True] * len(one_epochs), spec  # training loss summed over both ranks' shares
    maml, one = r0["runs"]["maml"]["episodic"], single["maml"]["episodic"]
    assert len(maml) == len(one) == worker.MAML_CONFIG["test_episodes"]
    assert abs(sum(maml) / len(maml) - sum(one) / len(one)) <= TOLERANCE


def test_bench_under_torchrun_writes_one_run_folder_in_the_usual_format(two_ranks, tmp_path, monkeypatch):
    out, _, _ = two_ranks
    folders = list((out / "cli" / "runs").iterdir())
    assert len(folders) == 1  # rank 1 made no folder of its own
    ran = folders[0]
    assert json.loads((ran / "run.json").read_text())["status"] == "finished"
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--strategy", "finetune", "--epochs", "1", "--max-train-per-class", "60", "--device", "cpu",
                 "--no-progress", "--out", str(tmp_path / "one")]) == 0
    one = tmp_path / "one"
    assert sorted(p.name for p in ran.iterdir() if p.name != ".lock") == \
           sorted(p.name for p in one.iterdir() if p.name != ".lock")
    dist_metrics, one_metrics = (json.loads((d / "metrics.json").read_text()) for d in (ran, one))
    assert dist_metrics.keys() == one_metrics.keys()
    assert abs(dist_metrics["summary"]["last_accuracy"] - one_metrics["summary"]["last_accuracy"]) <= TOLERANCE


def fake_rank(monkeypatch, rank: int, world: int) -> None:
    """The environment torchrun gives a rank, without a process group (the arithmetic only)."""
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", str(rank))


def test_shards_cover_each_global_batch_and_pad_to_equal_sizes(monkeypatch):
    order = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    shards = []
    for r in range(3):
        fake_rank(monkeypatch, r, 3)
        shards.append(distributed.shard(order))
    assert {len(s) for s in shards} == {4}  # 11 rows padded to 12: every rank the same number of steps
    per_rank = distributed.local_share(6)
    for step in range(2):  # global batch k = the permutation's next 6 rows (wrapping round)
        rows = torch.cat([s[step * per_rank:(step + 1) * per_rank] for s in shards])
        expected = torch.cat([order, order[:1]])[step * 6:(step + 1) * 6]
        assert sorted(rows.tolist()) == sorted(expected.tolist())


def test_split_range_is_balanced_and_ordered(monkeypatch):
    parts = []
    for r in range(4):
        fake_rank(monkeypatch, r, 4)
        parts.append(distributed.split_range(10))
    assert parts == [(0, 3), (3, 6), (6, 8), (8, 10)]
    fake_rank(monkeypatch, 2, 4)
    assert distributed.split_range(3) == (0, 3)  # fewer rows than ranks: every rank computes all


def test_a_batch_that_does_not_split_is_one_line_before_any_work(monkeypatch, tmp_path, capsys):
    fake_rank(monkeypatch, 0, 2)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--strategy", "finetune", "--batch-size", "33", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size 33 must be a multiple of the 2 processes" in err[0]
    assert not (tmp_path / "runs").exists()
