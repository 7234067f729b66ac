"""Avalanche in, cfs out: a benchmark built by Avalanche runs under a cfs strategy, and an
Avalanche PluginMetric attached to a cfs run reports the value cfs computes itself."""

from __future__ import annotations

import builtins
import json
import warnings

import pytest
import torch

from cfs.errors import CfsError


def test_scenario_from_avalanche_keeps_streams_and_renumbers_classes(avalanche_benchmark):
    from cfs.interop.avalanche import scenario_from_avalanche

    bm = avalanche_benchmark(class_order=[4, 1, 5, 0, 3, 2])
    sc = scenario_from_avalanche(bm)
    assert sc.kind == "class-incremental" and len(sc.experiences) == 3
    assert sc.class_order == [1, 4, 0, 5, 2, 3]  # each experience's classes, sorted, in stream order
    for exp, tr, te in zip(sc.experiences, bm.train_stream, bm.test_stream):
        assert len(exp.train) == len(tr.dataset) and len(exp.test) == len(te.dataset)
        assert exp.classes == [2 * exp.index, 2 * exp.index + 1]
        assert sorted(set(exp.train.y.tolist())) == exp.classes == sorted(set(exp.test.y.tolist()))
        # the samples themselves are unchanged: original label of cfs label k is class_order[k]
        x0, y0 = tr.dataset[0][0], tr.dataset[0][1]
        match = (exp.train.x.reshape(len(exp.train), -1) == x0).all(1).nonzero().flatten()
        assert len(match) == 1 and sc.class_order[int(exp.train.y[match[0]])] == y0
    assert sc.input_shape == (8, 1, 1)


def test_cfs_strategy_learns_on_an_avalanche_benchmark(avalanche_benchmark, tmp_path):
    from cfs.interop.avalanche import run_on_avalanche

    warnings.filterwarnings("ignore")
    bm = avalanche_benchmark()
    cfg = {"epochs": 2, "batch_size": 8, "lr": 0.05, "device": "cpu", "seed": 0}
    joint, _ = run_on_avalanche(bm, "joint", cfg, out=tmp_path / "joint")
    finetune, _ = run_on_avalanche(bm, "finetune", cfg)
    R_joint, R_ft = joint.state.results.rows, finetune.state.results.rows
    assert R_joint[-1][0] > 0.9 and R_joint[-1][-1] > 0.9  # joint keeps every experience
    assert R_ft[-1][-1] > 0.9 and R_ft[-1][0] < 0.5  # fine-tuning forgets the first one
    data = json.loads((tmp_path / "joint" / "metrics.json").read_text())
    assert data["summary"]["last_accuracy"] > 0.9
    assert (tmp_path / "joint" / "eval_results.csv").read_text().startswith("eval_exp,training_exp,")


def test_avalanche_plugin_metrics_attached_to_a_cfs_run(avalanche_benchmark):
    from avalanche.evaluation.metrics import (StreamAccuracy, ExperienceAccuracy, EpochAccuracy,
                                              StreamForgetting, EpochLoss)
    from cfs.evaluation.names import eval_metrics
    from cfs.interop.avalanche import run_on_avalanche

    warnings.filterwarnings("ignore")
    metrics = [StreamAccuracy(), ExperienceAccuracy(), EpochAccuracy(), StreamForgetting(), EpochLoss()]
    result, shim = run_on_avalanche(avalanche_benchmark(), "finetune",
                                    {"epochs": 2, "batch_size": 8, "lr": 0.05, "device": "cpu"}, metrics=metrics)
    res = result.state.results
    import numpy as np

    R, L, n = np.array(res.rows), np.array(res.losses), np.array(res.test_sizes)
    ours = eval_metrics(R, L, np.array(res.initial), n, len(R) - 1)
    for name in ("Top1_Acc_Stream/eval_phase/test_stream/Task000",
                 "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000",
                 "StreamForgetting/eval_phase/test_stream"):
        assert shim.last[name] == pytest.approx(ours[name], abs=1e-6)
    assert len(shim.values["Top1_Acc_Stream/eval_phase/test_stream/Task000"]) == 3  # one per experience
    epochs = result.timings.epochs
    acc = [v for _, v in shim.values["Top1_Acc_Epoch/train_phase/train_stream/Task000"]]
    loss = [v for _, v in shim.values["Loss_Epoch/train_phase/train_stream/Task000"]]
    assert acc == pytest.approx([e.accuracy for e in epochs], abs=1e-6)
    assert loss == pytest.approx([e.loss for e in epochs], abs=1e-5)
    assert shim.last["StreamForgetting/eval_phase/test_stream"] > 0.2  # fine-tuning forgets
    # x positions follow Avalanche's clock: iterations so far (24 samples per class / batch 8)
    assert shim.values["Top1_Acc_Stream/eval_phase/test_stream/Task000"][0][0] == 2 * (48 // 8)


def test_missing_avalanche_is_a_one_line_error(monkeypatch):
    from cfs.interop import avalanche as interop

    real_import = builtins.__import__

    def no_avalanche(name, *args, **kwargs):
        if name == "avalanche" or name.startswith("avalanche."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_avalanche)
    with pytest.raises(CfsError, match=r"pip install 'cfs\[avalanche\]'"):
        interop.scenario_from_avalanche(object())


def test_task_incremental_benchmark_is_refused(avalanche_benchmark):
    from avalanche.benchmarks import nc_benchmark
    from torch.utils.data import TensorDataset

    from cfs.interop.avalanche import scenario_from_avalanche

    x, y = torch.randn(40, 4), torch.arange(40) % 4
    bm = nc_benchmark(TensorDataset(x, y), TensorDataset(x, y), n_experiences=2, task_labels=True, shuffle=False)
    with pytest.raises(CfsError, match="task_labels=False"):
        scenario_from_avalanche(bm)
