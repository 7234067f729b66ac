"""``cfs distill`` end to end on digits: train and save a teacher, distil it with every loss."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from cfs.cli import main


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("distill") / "teacher.pt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["distill", "--train-teacher", "--teacher-backbone", "mlp", "--save", str(path), "--epochs", "4"]) == 0
    finally:
        torch.set_num_threads(threads)
    return path


def _accuracies(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"accuracy\s+([\d.]+)%", text)]


@pytest.mark.parametrize("loss", ["kd", "clkd", "nckd", "trg", "pckd"])
def test_distill_reports_three_accuracies(teacher, loss, capsys):
    capsys.readouterr()
    args = ["distill", "--teacher", str(teacher), "--student", "mlp", "--loss", loss, "--epochs", "3",
            "--train-per-class", "60", "--threads", "1"]
    assert main(args) == 0
    teacher_acc, alone, distilled = _accuracies(capsys.readouterr().out)
    assert teacher_acc > 90  # the saved teacher was reloaded, not retrained
    assert alone > 60 and distilled > 60  # both students learn the 10 digits from 600 images


def test_nckd_reports_the_nc3_head(teacher, capsys):
    capsys.readouterr()
    args = ["distill", "--teacher", str(teacher), "--student", "mlp", "--loss", "nckd", "--epochs", "3",
            "--train-per-class", "60", "--threads", "1"]
    assert main(args) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if "NC3 head" in ln]
    assert len(line) == 1
    assert float(re.search(r"([\d.]+)%", line[0]).group(1)) > 60  # nearest class centre learns the digits too


def test_distill_user_errors(teacher, tmp_path, capsys):
    assert main(["distill", "--student", "mlp"]) == 2
    assert main(["distill", "--teacher", str(tmp_path / "missing.pt")]) == 2
    assert main(["distill", "--train-teacher"]) == 2
    err = capsys.readouterr().err
    assert "--teacher CKPT" in err and "does not exist" in err and "--save" in err
    garbage, other = tmp_path / "garbage.pt", tmp_path / "other.pt"
    garbage.write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(1)}, other)
    assert main(["distill", "--teacher", str(garbage)]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(other)]) == 2
    assert "is not a teacher checkpoint" in capsys.readouterr().err


def test_losses_are_registered_by_the_core_with_summaries():
    from cfs.plugins import get_plugin_manager

    pm = get_plugin_manager(autoload=False)
    assert list(pm.distill_losses) == ["clkd", "kd", "nckd", "pckd", "trg"]
    for entry in pm.distill_losses.entries():
        assert entry.plugin == "distill" and entry.summary  # cfs.losses.distill, one line each


def test_unknown_loss_names_the_registered_ones(teacher, capsys):
    assert main(["distill", "--teacher", str(teacher), "--loss", "kdd"]) == 2
    err = capsys.readouterr().err
    assert "unknown distillation loss 'kdd'" in err and "did you mean: kd" in err
    assert "registered losses: clkd, kd, nckd, pckd, trg" in err and len(err.strip().splitlines()) == 1


def test_a_plugin_registers_a_loss_that_distill_runs_by_name(teacher, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    args = ["distill", "--teacher", str(teacher), "--student", "mlp", "--loss", "logit-mse", "--epochs", "2",
            "--train-per-class", "20", "--batch-size", "50", "--threads", "1"]
    assert main(args) == 2  # not registered without the plugin
    assert "unknown distillation loss 'logit-mse'" in capsys.readouterr().err
    assert main([*args, "-p", "_distill_plugin"]) == 0
    out = capsys.readouterr().out
    assert "loss logit-mse" in out and len(_accuracies(out)) == 3
    plugin = sys.modules["_distill_plugin"]
    assert plugin.CALLS == [1] * 4 + [2] * 4  # 200 images, batches of 50, two epochs
    assert "logit-mse was called on 8 batches" in out  # the plugin's report line is printed
