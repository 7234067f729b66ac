"""Every mistake a user can make on a ``cfs sweep`` command line or grid file is one line,
exit code 2, and nothing is run or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfs.cli import main


def one_line_error(args: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cfs: error: "), err
    return err


def grid_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "finetun"], "finetun"),
    (["--strategy", "finetune", "--scenario", "split-digitz"], "split-digitz"),
    (["--strategy", "finetune", "--seeds", "0,x"], "'x' is not a seed"),
    (["--strategy", "finetune", "--seeds", "1,1"], "seed 1 is given twice"),
    (["--strategy", "finetune", "-o", "replay.mem_size=10,20"], "no strategy of the sweep includes"),
    (["--strategy", "replay", "-o", "replay.mem_size=10,abc"], "replay"),
    (["--strategy", "replay", "-o", "replay.no_such_key=1"], "no_such_key"),
    (["--strategy", "finetune", "--epochs", "two"], "--epochs"),
    (["--strategy", "finetune", "--logger", "nope"], "unknown logger 'nope'"),
    (["--strategy", "finetune", "--backend", "local", "--workers", "0"], "--workers must be >= 1"),
    (["--strategy", "finetune", "--backend", "local", "--address", "auto"], "--address is for --backend ray"),
    (["--strategy", "finetune", "--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
    ([], "no strategy to sweep"),
])
def test_bad_flags_are_one_line(tmp_path, capsys, extra, message):
    out = tmp_path / "sweep"
    err = one_line_error(["sweep", *extra, "--out", str(out)], capsys)
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize("text, message", [
    ("strategies: [finetune]\nseedz: [0]\n", "unknown key 'seedz'"),
    ("strategies: [finetune\n", "not valid YAML"),
    ("- finetune\n", "must hold a mapping"),
    ("strategies: [finetune]\nseeds: [0, zero]\n", "'zero' is not a seed"),
    ("strategies: [finetune]\nbench: {epochz: 1}\n", "--epochz"),
    ("strategies: [finetune]\noptions: [1, 2]\n", "'options' must map"),
    ("strategies: [3]\n", "'strategies' must be a name"),
])
def test_bad_grid_file_is_one_line(tmp_path, capsys, text, message):
    out = tmp_path / "sweep"
    err = one_line_error(["sweep", "--grid", grid_file(tmp_path, text), "--out", str(out)], capsys)
    assert message in err and "--grid" in err
    assert not out.exists()


def test_missing_grid_file(tmp_path, capsys):
    assert "does not exist" in one_line_error(["sweep", "--grid", str(tmp_path / "none.yaml")], capsys)


def test_ray_backend_without_ray(tmp_path, capsys, monkeypatch):
    import cfs.sweep.backends

    monkeypatch.setattr(cfs.sweep.backends, "ray_available", lambda: False)
    err = one_line_error(["sweep", "--strategy", "finetune", "--backend", "ray", "--out", str(tmp_path / "s")], capsys)
    assert "pip install 'cfs[ray]'" in err
    assert not (tmp_path / "s").exists()


def test_foreign_out_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    err = one_line_error(["sweep", "--strategy", "finetune", "--backend", "local", "--out", str(out)], capsys)
    assert "not a cfs sweep folder" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
