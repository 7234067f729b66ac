"""Avalanche 0.6.0 metric names and values derived from the accuracy matrix (one source of truth).

Names have Avalanche's form ``<Metric>/<phase>/<stream>/Task000[/Exp000]``. The values are the
ones Avalanche's ``EvaluationPlugin`` emits when the protocol of the cfs engine is run there:
``strategy.eval(test_stream)`` once before training (needed by forward transfer), then for
each experience ``strategy.train(exp)`` followed by ``strategy.eval(test_stream)``; checked
against Avalanche by ``tests/evaluation/test_avalanche_differential.py``. Per eval call:

* ``Top1_Acc_Exp``/``Loss_Exp`` for every experience, ``Top1_Acc_Stream``/``Loss_Stream`` over
  all test samples of the stream (sample-weighted);
* ``ExperienceForgetting`` ``R[j, j] - R[i, j]`` and ``ExperienceBWT`` (its negation) only for
  experiences ``j < i`` (learnt before the current step); ``StreamForgetting``/``StreamBWT``
  their mean, ``0.0`` when there is none (Avalanche's empty ``Mean``), emitted at every eval;
* ``ExperienceForwardTransfer`` only for ``j = i + 1`` (``R[i, i+1] - b[i+1]``, ``b`` the
  untrained row) and ``StreamForwardTransfer``, the mean over every ``j <= i + 1`` seen so far
  (``0.0`` before training);
* ``ConfusionMatrix_Stream`` (rows: true class, columns: predicted class) and the timing
  metrics ``Time_Epoch``/``Time_Stream``.

Training metrics are per epoch: ``Top1_Acc_Epoch``/``Loss_Epoch`` (averages over every sample
of the epoch) and ``Time_Epoch``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

TASK = "Task000"
EVAL, TRAIN = "eval_phase", "train_phase"
TEST_STREAM, TRAIN_STREAM = "test_stream", "train_stream"
CONFUSION = "ConfusionMatrix_Stream/eval_phase/test_stream"


def exp_name(metric: str, j: int, phase: str = EVAL, stream: str = TEST_STREAM) -> str:
    return f"{metric}/{phase}/{stream}/{TASK}/Exp{j:03d}"


def stream_name(metric: str, phase: str = EVAL, stream: str = TEST_STREAM, task: bool = True) -> str:
    return f"{metric}/{phase}/{stream}/{TASK}" if task else f"{metric}/{phase}/{stream}"


def _accuracy_and_loss(acc: np.ndarray, loss: np.ndarray, n: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for j in range(len(acc)):
        out[exp_name("Top1_Acc_Exp", j)] = float(acc[j])
        out[exp_name("Loss_Exp", j)] = float(loss[j])
    out[stream_name("Top1_Acc_Stream")] = float((acc * n).sum() / n.sum())
    out[stream_name("Loss_Stream")] = float((loss * n).sum() / n.sum())
    return out


def eval_metrics(R: np.ndarray, L: np.ndarray, b: np.ndarray, n: np.ndarray, i: int) -> dict[str, float]:
    """Every scalar eval-phase value Avalanche emits at the evaluation after training ``i``."""
    R, L, b, n = (np.asarray(a, float) for a in (R, L, b, n))
    T = R.shape[1]
    out = _accuracy_and_loss(R[i], L[i], n)
    forg = [R[j, j] - R[i, j] for j in range(i)]
    for j, f in enumerate(forg):
        out[exp_name("ExperienceForgetting", j)] = float(f)
        out[exp_name("ExperienceBWT", j)] = -float(f)
    out[stream_name("StreamForgetting", task=False)] = float(np.mean(forg)) if forg else 0.0
    out[stream_name("StreamBWT", task=False)] = -float(np.mean(forg)) if forg else 0.0
    if i + 1 < T:
        out[exp_name("ExperienceForwardTransfer", i + 1)] = float(R[i, i + 1] - b[i + 1])
    fwt = [R[j - 1, j] - b[j] for j in range(1, min(i + 2, T))]
    out[stream_name("StreamForwardTransfer", task=False)] = float(np.mean(fwt)) if fwt else 0.0
    return out


def initial_eval_metrics(b: np.ndarray, Lb: np.ndarray, n: np.ndarray) -> dict[str, float]:
    """The values of the evaluation before any training (no forgetting or transfer yet)."""
    b, Lb, n = (np.asarray(a, float) for a in (b, Lb, n))
    out = _accuracy_and_loss(b, Lb, n)
    for metric in ("StreamForgetting", "StreamBWT", "StreamForwardTransfer"):
        out[stream_name(metric, task=False)] = 0.0
    return out


def train_epoch_names() -> tuple[str, str, str]:
    """Names of the per-epoch training metrics (accuracy, loss, time)."""
    return (
        stream_name("Top1_Acc_Epoch", TRAIN, TRAIN_STREAM),
        stream_name("Loss_Epoch", TRAIN, TRAIN_STREAM),
        stream_name("Time_Epoch", TRAIN, TRAIN_STREAM),
    )


def train_epoch_metrics(accuracy: float, loss: float, seconds: float) -> dict[str, float]:
    """The values Avalanche emits after one training epoch."""
    acc_name, loss_name, time_name = train_epoch_names()
    return {acc_name: float(accuracy), loss_name: float(loss), time_name: float(seconds)}


def eval_time_name() -> str:
    return stream_name("Time_Stream")


def history(R: np.ndarray, L: np.ndarray, b: np.ndarray, Lb: np.ndarray | None, n: np.ndarray,
            epochs: Sequence[Any], eval_seconds: Sequence[float]) -> list[dict[str, Any]]:
    """Every emitted value in Avalanche's order: the untrained eval, then for each experience
    its training epochs and its eval. Each entry: ``phase`` ("train"/"eval"),
    ``training_exp`` (``None`` for the untrained eval), ``epoch`` (train only), ``metrics``."""
    R = np.asarray(R, float)
    out: list[dict[str, Any]] = []
    if Lb is not None and len(b):
        out.append({"phase": "eval", "training_exp": None, "metrics": initial_eval_metrics(b, Lb, n)})
    for i in range(R.shape[0]):
        for e in epochs:
            if e.experience == i:
                out.append({"phase": "train", "training_exp": i, "epoch": e.epoch,
                            "metrics": train_epoch_metrics(e.accuracy, e.loss, e.seconds)})
        metrics = eval_metrics(R, L, b, n, i)
        if i < len(eval_seconds):
            metrics[eval_time_name()] = float(eval_seconds[i])
        out.append({"phase": "eval", "training_exp": i, "metrics": metrics})
    return out
