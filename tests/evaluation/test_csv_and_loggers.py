"""CSVLogger layout, JSON-lines and TensorBoard loggers, console table, loggers registered
by a plugin and selected with --logger."""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from cfs.cli import main
from cfs.errors import CfsError
from cfs.evaluation.csvlog import write_avalanche_csvs
from cfs.evaluation.loggers import JsonLines, TensorBoard, select_loggers, write_logs
from cfs.evaluation.names import history
from cfs.evaluation.table import format_table
from cfs.plugins import get_plugin_manager

R = np.array([[1.0, 0.0], [0.25, 0.75]])
L = np.array([[0.1, 3.0], [2.0, 0.5]])
EPOCHS = [SimpleNamespace(experience=0, epoch=0, accuracy=0.5, loss=1.25, seconds=0.1),
          SimpleNamespace(experience=1, epoch=0, accuracy=0.625, loss=0.75, seconds=0.1)]


def steps():
    return history(R, L, np.zeros(2), np.zeros(2), np.array([4, 4]), EPOCHS, [0.2, 0.3])


def test_csv_files_have_avalanche_csvlogger_layout(tmp_path):
    write_avalanche_csvs(tmp_path, steps(), 2)
    assert (tmp_path / "training_results.csv").read_text().splitlines() == [
        "training_exp,epoch,training_accuracy,val_accuracy,training_loss,val_loss",
        "0,0,0.5000,0,1.2500,0", "1,0,0.6250,0,0.7500,0"]
    assert (tmp_path / "eval_results.csv").read_text().splitlines() == [
        "eval_exp,training_exp,eval_accuracy,eval_loss,forgetting",
        "0,None,0.0000,0.0000,0", "1,None,0.0000,0.0000,0",
        "0,0,1.0000,0.1000,0", "1,0,0.0000,3.0000,0",
        "0,1,0.2500,2.0000,0.7500", "1,1,0.7500,0.5000,0"]


def test_jsonl_and_tensorboard_loggers(tmp_path):
    data = {"avalanche_history": steps(), "summary": {"last_accuracy": 0.5}, "seen_accuracy": [1.0, 0.5]}
    write_logs(tmp_path, data, [JsonLines()])
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x.get("phase") for x in lines] == ["eval", "train", "eval", "train", "eval", None]
    assert [x.get("x") for x in lines[:5]] == [0, 1, 1, 2, 2]
    assert lines[-1] == {"summary": {"last_accuracy": 0.5}}
    assert lines[4]["metrics"]["ExperienceForgetting/eval_phase/test_stream/Task000/Exp000"] == 0.75

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_logs(tmp_path, data, [TensorBoard()])
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("Top1_Acc_Stream/eval_phase/test_stream/Task000")
    assert [(e.step, round(e.value, 6)) for e in events] == [(0, 0.0), (1, 0.5), (2, 0.5)]


def test_jsonl_writes_the_kinds_own_block(tmp_path):
    data = {"kind": "fscil", "fscil": {"average_accuracy": 0.5}, "summary": {"last_accuracy": 0.5}}
    JsonLines().write(tmp_path, data)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"fscil": {"average_accuracy": 0.5}}, {"summary": {"last_accuracy": 0.5}}]


def test_unknown_logger_names_the_valid_ones():
    pm = get_plugin_manager()
    with pytest.raises(CfsError, match="console, jsonl, tensorboard"):
        select_loggers(pm.loggers, ["console", "csv"])
    assert [x.name for x in select_loggers(pm.loggers, ["jsonl", "console"])] == ["jsonl", "console"]


def test_console_table():
    row = {"strategy": "ft", "summary": {"last_accuracy": 0.5, "average_incremental_accuracy": 0.75,
                                         "forgetting": 0.25}, "time": {"total_seconds": 1.0}}
    assert format_table([row]).splitlines()[2].split() == ["ft", "50.0", "75.0", "25.0", "1.0"]


PLUGIN = textwrap.dedent('''
    from cfs import hookimpl
    from cfs.evaluation.loggers import Logger

    class Summary(Logger):
        """summary.txt: the final numbers, one per line."""
        name = "summary-txt"

        def write(self, folder, data):
            lines = [f"{k} {v:.4f}" for k, v in sorted(data["summary"].items()) if isinstance(v, float)]
            (folder / "summary.txt").write_text("\\n".join([data["kind"], *lines]) + "\\n")

        def finish(self, rows, kind):
            print(f"summary-txt: {len(rows)} run(s) of kind {kind.name}")

    @hookimpl
    def cfs_add_loggers(registry):
        registry.add(Summary())
''')


@pytest.fixture
def logger_plugin(tmp_path, monkeypatch):
    (tmp_path / "my_summary_logger.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_summary_logger"


def test_plugin_logger_selected_with_logger_flag(logger_plugin, tmp_path, capsys):
    assert main(["list", "-p", logger_plugin]) == 0
    assert "summary-txt  summary.txt: the final numbers, one per line." in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["bench", "-p", logger_plugin, "--strategy", "finetune", "--epochs", "1", "--logger", "summary-txt",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "summary-txt: 1 run(s) of kind class-incremental" in printed and "final acc %" not in printed
    lines = (out / "summary.txt").read_text().splitlines()
    metrics = json.loads((out / "metrics.json").read_text())
    assert lines[0] == "class-incremental"
    assert f"last_accuracy {metrics['summary']['last_accuracy']:.4f}" in lines
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("loaded", [False, True])
def test_unknown_logger_is_one_line_before_any_work(loaded, logger_plugin, tmp_path, capsys):
    never = ["--out", str(tmp_path / "never"), "--no-progress"]
    if loaded:  # the plugin is loaded, but a YAML config names a logger nobody registers
        config = tmp_path / "c.yaml"
        config.write_text("strategies: [finetune]\nloggers: [console, csv]\n")
        argv = ["bench", "-p", logger_plugin, "--config", str(config), *never]
    else:  # the plugin's logger without the plugin
        argv = ["bench", "--strategy", "finetune", "--logger", "summary-txt", *never]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    valid = "console, jsonl, summary-txt, tensorboard" if loaded else "console, jsonl, tensorboard"
    assert err.startswith("cfs: error: unknown logger") and f"(valid: {valid})" in err and "\n" not in err
    assert not (tmp_path / "never").exists()
