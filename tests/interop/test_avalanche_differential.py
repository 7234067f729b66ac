"""Differential test: the same model outputs through Avalanche 0.6.0's EvaluationPlugin and
through cfs give the same metric names and values (tolerance 1e-6), and the same CSV files.

cfs trains ``finetune`` on a short class-incremental stream (an Avalanche benchmark converted
with :func:`scenario_from_avalanche`) and records every output it produced: the logits of every
training sample in every epoch, and the scores of every test sample at every evaluation.
Avalanche's own ``Naive`` strategy then runs the same protocol (eval before training, then
train + eval on the test stream per experience) with a model that answers each sample with the
recorded cfs output of that moment, and the loss convention of the cfs engine as criterion.
Every value its EvaluationPlugin emits must equal the value cfs wrote under the same name.
"""

from __future__ import annotations

import json
import math
import warnings

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.config import resolve
from cfs.engine.runner import run_strategy
from cfs.evaluation import metrics as M
from cfs.evaluation.names import CONFUSION
from cfs.evaluation.writer import write_run
from cfs.plugins import get_plugin_manager

EPOCHS = 2


def key(row: torch.Tensor) -> bytes:
    return row.detach().float().reshape(-1).cpu().numpy().tobytes()


class Recorder:
    """Records cfs outputs per stage: ("train", exp, epoch) and ("eval", exp)."""

    def __init__(self) -> None:
        self.table: dict[tuple, dict[bytes, torch.Tensor]] = {}
        self.confusions: list = []

    @hookimpl
    def cfs_after_forward(self, state):
        stage = self.table.setdefault(("train", state.experience_index, state.epoch), {})
        for x, out in zip(state.batch[0], state.outputs):
            stage[key(x)] = out.detach().float().clone()

    @hookimpl
    def cfs_after_eval(self, state):
        stage = self.table.setdefault(("eval", state.experience_index), {})
        state.model.eval()
        with torch.no_grad():
            for exp in state.scenario.experiences:
                x = state.prepare(exp.test.x)
                for row, out in zip(x, state.scores(x)[:, : state.n_seen].float()):
                    stage[key(row)] = out.clone()
        state.model.train()
        res = state.results
        n = state.scenario.num_classes
        self.confusions.append(M.confusion_matrix(res.last_targets.numpy(), res.last_predictions.numpy(), n))


def run_cfs(benchmark, tmp_path):
    from cfs.interop.avalanche import scenario_from_avalanche

    scenario = scenario_from_avalanche(benchmark)
    cfg = resolve({"strategies": ["finetune"], "epochs": EPOCHS, "batch_size": 8, "lr": 0.05, "backbone": "mlp",
                   "device": "cpu", "eval_batch_size": 16, "seed": 3})
    pm = get_plugin_manager()
    rec = Recorder()
    pm.register(rec, name="recorder")
    try:
        result = run_strategy(pm, cfg, "finetune", scenario, progress=False)
    finally:
        pm.unregister(name="recorder")
    data = write_run(result, tmp_path / "cfs")
    return data, rec


def run_avalanche(benchmark, rec, tmp_path):
    from avalanche.evaluation.metrics import (accuracy_metrics, bwt_metrics, confusion_matrix_metrics,
                                              forgetting_metrics, forward_transfer_metrics, loss_metrics,
                                              timing_metrics)
    from avalanche.core import SupervisedPlugin
    from avalanche.logging import BaseLogger, CSVLogger
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive

    class Replay(torch.nn.Module):
        """Answers each sample with the output cfs produced for it at the current stage."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.stage: tuple = ("init",)

        def forward(self, x):
            if self.stage == ("init",):  # cfs has learnt no class yet: one constant logit
                out = torch.zeros(len(x), 1)
            else:
                table = rec.table[self.stage]
                out = torch.stack([table[key(row.reshape(-1, 1, 1))] for row in x])
            return out + 0 * self.w

    class Stage(SupervisedPlugin):
        def __init__(self, model):
            super().__init__()
            self.model, self.epoch, self.trained = model, 0, -1

        def before_training_epoch(self, strategy, **kw):
            self.model.stage = ("train", strategy.experience.current_experience, strategy.clock.train_exp_epochs)

        def after_training_exp(self, strategy, **kw):
            self.trained = strategy.experience.current_experience

        def before_eval(self, strategy, **kw):
            self.model.stage = ("init",) if self.trained < 0 else ("eval", self.trained)

    class Collect(BaseLogger):
        """Groups emitted values by event: ("eval", training_exp|None) or ("train", exp, epoch)."""

        def __init__(self):
            super().__init__()
            self.events, self.current, self.trained = [], {}, None

        def log_single_metric(self, name, value, x_plot):
            self.current[name] = value

        def after_training_epoch(self, strategy, metric_values, **kw):
            self.events.append((("train", strategy.experience.current_experience), self.current))
            self.current = {}

        def after_training_exp(self, strategy, metric_values, **kw):
            self.trained = strategy.experience.current_experience

        def after_eval(self, strategy, metric_values, **kw):
            self.events.append((("eval", self.trained), self.current))
            self.current = {}

    model = Replay()
    collect = Collect()
    evaluator = EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True),
        loss_metrics(epoch=True, experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        forward_transfer_metrics(experience=True, stream=True),
        confusion_matrix_metrics(stream=True, num_classes=benchmark.n_classes, save_image=False),
        timing_metrics(epoch=True, stream=True),
        loggers=[collect, CSVLogger(str(tmp_path / "avalanche"))])

    def criterion(out, y):  # the cfs engine's loss convention (see cfs.engine.continual.evaluate)
        return F.cross_entropy(out, y.clamp(max=out.shape[1] - 1))

    strategy = Naive(model, torch.optim.SGD(model.parameters(), lr=0.0), criterion=criterion, train_mb_size=7,
                     train_epochs=EPOCHS, eval_mb_size=5, evaluator=evaluator, device="cpu", eval_every=0,
                     plugins=[Stage(model)])
    strategy.eval(benchmark.test_stream)
    for exp in benchmark.train_stream:
        strategy.train(exp, eval_streams=[])
        strategy.eval(benchmark.test_stream)
    return collect.events


def close(a, b) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)


def test_every_avalanche_metric_matches_cfs(avalanche_benchmark, tmp_path):
    warnings.filterwarnings("ignore")
    benchmark = avalanche_benchmark()
    ours, rec = run_cfs(benchmark, tmp_path)
    theirs = run_avalanche(benchmark, rec, tmp_path)
    history = ours["avalanche_history"]
    assert [(e["phase"], e["training_exp"]) for e in history] == [k for k, _ in theirs]
    # the run learnt and forgot something, so the comparison is not between zeros
    R = ours["accuracy_matrix"]
    assert R[0][0] > 0.9 and R[-1][0] < R[0][0]

    compared = 0
    eval_i = 0
    for entry, (_, values) in zip(history, theirs):
        names = set(values) - {CONFUSION}
        if entry["training_exp"] is None:  # the engine does not time its untrained evaluation
            names -= {"Time_Stream/eval_phase/test_stream/Task000"}
        assert names == set(entry["metrics"]), (entry["phase"], entry["training_exp"])
        for name in names:
            if name.startswith("Time_"):
                assert values[name] >= 0 and entry["metrics"][name] >= 0
                continue
            if entry["training_exp"] is None and name.startswith(("Top1_Acc_Exp", "Loss_", "Top1_Acc_Stream")):
                continue  # untrained model: cfs predicts nothing (accuracy 0), see below
            assert close(values[name], entry["metrics"][name]), (name, values[name], entry["metrics"][name])
            compared += 1
        if entry["phase"] == "eval" and entry["training_exp"] is not None:
            cm = values[CONFUSION].numpy()
            assert (cm == rec.confusions[eval_i]).all()
            eval_i += 1
    assert compared >= 50  # accuracy, loss, forgetting, BWT, forward transfer at every step
    assert ours["confusion_matrix"]["counts"] == rec.confusions[-1].tolist()
    # untrained eval: cfs scores no class (accuracy 0); the replayed constant predicts class 0,
    # which is in experience 0 only, so every later experience agrees (forward transfer uses them)
    init = history[0]["metrics"]
    for j in range(1, len(R)):
        name = f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"
        assert init[name] == 0.0 == theirs[0][1][name]

    # CSVLogger layout: same header and rows (the untrained eval's rows differ as above)
    for name in ("training_results.csv", "eval_results.csv"):
        a = (tmp_path / "cfs" / name).read_text().splitlines()
        b = (tmp_path / "avalanche" / name).read_text().splitlines()
        assert a[0] == b[0] and len(a) == len(b)
        for ra, rb in zip(a[1:], b[1:]):
            if ",None," in rb:
                assert ra.split(",")[:2] == rb.split(",")[:2]
                continue
            fa, fb = ra.split(","), rb.split(",")
            assert fa[:2] == fb[:2]
            for x, y in zip(fa[2:], fb[2:]):
                assert x == y or abs(float(x) - float(y)) <= 1e-4, (name, ra, rb)
    metrics_file = json.loads((tmp_path / "cfs" / "metrics.json").read_text())
    final, last = metrics_file["avalanche"], history[-1]["metrics"]
    assert set(final) == set(last) - {"Time_Stream/eval_phase/test_stream/Task000"}
    assert all(close(final[k], last[k]) for k in final)
