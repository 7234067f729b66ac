"""CSVLogger layout, JSON-lines and TensorBoard loggers, console table."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from cfs.errors import CfsError
from cfs.evaluation.csvlog import write_avalanche_csvs
from cfs.evaluation.loggers import check_loggers, write_logs
from cfs.evaluation.names import history
from cfs.evaluation.table import format_table

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
    write_logs(tmp_path, data, ["jsonl"])
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x.get("phase") for x in lines] == ["eval", "train", "eval", "train", "eval", None]
    assert [x.get("x") for x in lines[:5]] == [0, 1, 1, 2, 2]
    assert lines[-1] == {"summary": {"last_accuracy": 0.5}}
    assert lines[4]["metrics"]["ExperienceForgetting/eval_phase/test_stream/Task000/Exp000"] == 0.75

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_logs(tmp_path, data, ["tensorboard"])
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("Top1_Acc_Stream/eval_phase/test_stream/Task000")
    assert [(e.step, round(e.value, 6)) for e in events] == [(0, 0.0), (1, 0.5), (2, 0.5)]


def test_unknown_logger_names_the_valid_ones():
    with pytest.raises(CfsError, match="console, jsonl, tensorboard"):
        check_loggers(["csv"])


def test_console_table():
    row = {"strategy": "ft", "summary": {"last_accuracy": 0.5, "average_incremental_accuracy": 0.75,
                                         "forgetting": 0.25}, "time": {"total_seconds": 1.0}}
    assert format_table([row]).splitlines()[2].split() == ["ft", "50.0", "75.0", "25.0", "1.0"]
