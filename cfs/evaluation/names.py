"""Avalanche metric names and values derived from the accuracy matrix (one source of truth).

Names have Avalanche's form ``<Metric>/<phase>/<stream>/Task000[/Exp000]``. Semantics follow
Avalanche's ``EvaluationPlugin`` metrics when the whole test stream is evaluated after every
training experience: stream accuracy is over all test samples of the stream; experience
forgetting is the accuracy right after learning an experience minus the current one, reported
for experiences learnt before the current step; BWT is its negation; forward transfer is the
accuracy on an experience before it is learnt minus the untrained model's.
"""

from __future__ import annotations

import numpy as np

TASK = "Task000"


def exp_name(metric: str, j: int, phase: str = "eval_phase", stream: str = "test_stream") -> str:
    return f"{metric}/{phase}/{stream}/{TASK}/Exp{j:03d}"


def stream_name(metric: str, phase: str = "eval_phase", stream: str = "test_stream", task: bool = True) -> str:
    return f"{metric}/{phase}/{stream}/{TASK}" if task else f"{metric}/{phase}/{stream}"


def eval_metrics(R: np.ndarray, L: np.ndarray, b: np.ndarray, n: np.ndarray, i: int) -> dict[str, float]:
    """Every eval-phase metric value emitted after training experience ``i``."""
    R, L, b, n = (np.asarray(a, float) for a in (R, L, b, n))
    T = R.shape[1]
    out: dict[str, float] = {}
    for j in range(T):
        out[exp_name("Top1_Acc_Exp", j)] = R[i, j]
        out[exp_name("Loss_Exp", j)] = L[i, j]
    out[stream_name("Top1_Acc_Stream")] = float((R[i] * n).sum() / n.sum())
    out[stream_name("Loss_Stream")] = float((L[i] * n).sum() / n.sum())
    forg = {j: R[j, j] - R[i, j] for j in range(i)}
    for j, f in forg.items():
        out[exp_name("ExperienceForgetting", j)] = f
        out[exp_name("ExperienceBWT", j)] = -f
    if forg:
        out[stream_name("StreamForgetting", task=False)] = float(np.mean(list(forg.values())))
        out[stream_name("StreamBWT", task=False)] = -float(np.mean(list(forg.values())))
    fwt = {j: R[j - 1, j] - b[j] for j in range(1, min(i + 2, T))}
    for j, f in fwt.items():
        out[exp_name("ExperienceForwardTransfer", j)] = f
    if fwt:
        out[stream_name("StreamForwardTransfer", task=False)] = float(np.mean(list(fwt.values())))
    return out


def train_epoch_names() -> tuple[str, str, str]:
    """Names of the per-epoch training metrics (accuracy, loss, time)."""
    return (
        stream_name("Top1_Acc_Epoch", "train_phase", "train_stream"),
        stream_name("Loss_Epoch", "train_phase", "train_stream"),
        stream_name("Time_Epoch", "train_phase", "train_stream"),
    )
