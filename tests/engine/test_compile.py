"""``--compile``: torch.compile of the backbone with every hook outside the compiled region. A
compiled run learns what the eager run learns (a strategy adding a loss and a teacher copy
included); what it cannot do is one line before any work."""

from __future__ import annotations

import shutil

import pytest

from cfs import testing
from cfs.cli import main

#: |compiled - eager| accuracy per experience: inductor fuses and reorders float arithmetic
TOLERANCE = 0.03


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler, and none is installed")
def test_compiled_run_matches_the_eager_run_with_hooks_outside():
    settings = {"epochs": 1, "max_train_per_class": 40}
    eager = testing.run("lwf", **settings)  # cfs_loss from a frozen copy of the model (a teacher)
    compiled = testing.run("lwf", compile=True, **settings)
    assert compiled.state.model.backbone._compiled_call_impl is not None  # the backbone is compiled
    assert compiled.state.model.head._compiled_call_impl is None  # the growing head is not
    rows_e, rows_c = testing.accuracy_matrix(eager), testing.accuracy_matrix(compiled)
    assert abs(rows_e - rows_c).max() <= TOLERANCE


def test_compile_without_a_cpp_compiler_is_one_line_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--compile", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "C++ compiler" in err[0]
    assert not (tmp_path / "runs").exists()


def test_compile_of_a_meta_learning_run_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--scenario", "omniglot-5w1s", "--strategy", "maml", "--compile", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--compile applies to class-incremental and FSCIL runs" in err[0]
