"""``cfs distill`` end to end on digits: train and save a teacher, distil it with every loss."""

from __future__ import annotations

import re

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
