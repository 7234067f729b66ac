"""Every metric against a hand-computed 3-experience accuracy matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cfs.evaluation import metrics as M
from cfs.evaluation.names import eval_metrics, initial_eval_metrics

# R[i, j]: accuracy on experience j after training experience i; n: test sizes; b: untrained row.
R = np.array([[0.9, 0.1, 0.0],
              [0.95, 0.8, 0.2],
              [0.5, 0.7, 0.9]])
L = np.array([[0.3, 2.0, 3.0],
              [0.2, 0.5, 1.0],
              [1.0, 0.8, 0.1]])
n = np.array([10, 20, 10])
b = np.array([0.1, 0.05, 0.2])


def test_seen_average_last_and_incremental_accuracy():
    # A1 = (0.95*10 + 0.8*20) / 30 = 25.5/30; A2 = (5 + 14 + 9) / 40
    assert M.seen_accuracy(R, n) == pytest.approx([0.9, 0.85, 0.7])
    assert M.average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert M.last_accuracy(R, n) == pytest.approx(0.7)
    assert M.average_incremental_accuracy(R, n) == pytest.approx((0.9 + 0.85 + 0.7) / 3)


def test_forgetting_bwt_fwt():
    # Chaudhry: best earlier accuracy minus final: exp0 max(0.9, 0.95) - 0.5, exp1 0.8 - 0.7
    assert M.forgetting_per_experience(R) == pytest.approx([0.45, 0.1])
    assert M.forgetting(R) == pytest.approx(0.275)
    # GEM BWT: final minus just-learnt: (0.5-0.9 + 0.7-0.8) / 2
    assert M.backward_transfer(R) == pytest.approx(-0.25)
    # GEM FWT: accuracy before learning minus untrained: (0.1-0.05 + 0.2-0.2) / 2
    assert M.forward_transfer(R, b) == pytest.approx(0.025)
    assert M.forgetting(R[:1, :1]) == 0.0 and M.backward_transfer(R[:1, :1]) == 0.0


def test_per_class_accuracy_and_confusion_matrix():
    y_true = np.array([0, 0, 1, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2, -1])  # -1: nothing learnt yet, counted nowhere
    acc = M.per_class_accuracy(y_true, y_pred, 4)
    assert acc[:3] == pytest.approx([0.5, 2 / 3, 0.5]) and math.isnan(acc[3])
    assert M.confusion_matrix(y_true, y_pred, 4).tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_avalanche_values_after_each_experience():
    ex = "eval_phase/test_stream/Task000/Exp"
    m0 = eval_metrics(R, L, b, n, 0)
    assert m0[f"Top1_Acc_Exp/{ex}001"] == 0.1 and m0[f"Loss_Exp/{ex}002"] == 3.0
    assert m0["Top1_Acc_Stream/eval_phase/test_stream/Task000"] == pytest.approx((9 + 2 + 0) / 40)
    assert m0["Loss_Stream/eval_phase/test_stream/Task000"] == pytest.approx((3 + 40 + 30) / 40)
    assert not any(k.startswith(("ExperienceForgetting", "ExperienceBWT")) for k in m0)
    assert m0["StreamForgetting/eval_phase/test_stream"] == 0.0 == m0["StreamBWT/eval_phase/test_stream"]
    assert m0[f"ExperienceForwardTransfer/{ex}001"] == pytest.approx(0.05)
    assert m0["StreamForwardTransfer/eval_phase/test_stream"] == pytest.approx(0.05)

    m1 = eval_metrics(R, L, b, n, 1)
    # Avalanche forgetting: accuracy right after learning minus now (0.9 - 0.95, may be < 0)
    assert m1[f"ExperienceForgetting/{ex}000"] == pytest.approx(-0.05)
    assert m1[f"ExperienceBWT/{ex}000"] == pytest.approx(0.05)
    assert f"ExperienceForgetting/{ex}001" not in m1
    assert m1["StreamForgetting/eval_phase/test_stream"] == pytest.approx(-0.05)
    assert m1["Top1_Acc_Stream/eval_phase/test_stream/Task000"] == pytest.approx(27.5 / 40)
    # only the next experience gets an experience FWT value; the stream one averages all so far
    assert [k for k in m1 if k.startswith("ExperienceForwardTransfer")] == [f"ExperienceForwardTransfer/{ex}002"]
    assert m1[f"ExperienceForwardTransfer/{ex}002"] == pytest.approx(0.0)
    assert m1["StreamForwardTransfer/eval_phase/test_stream"] == pytest.approx(0.025)

    m2 = eval_metrics(R, L, b, n, 2)
    assert m2[f"ExperienceForgetting/{ex}000"] == pytest.approx(0.4)
    assert m2[f"ExperienceForgetting/{ex}001"] == pytest.approx(0.1)
    assert m2["StreamForgetting/eval_phase/test_stream"] == pytest.approx(0.25)
    assert m2["StreamBWT/eval_phase/test_stream"] == pytest.approx(-0.25)
    assert not any(k.startswith("ExperienceForwardTransfer") for k in m2)
    assert m2["StreamForwardTransfer/eval_phase/test_stream"] == pytest.approx(0.025)


def test_untrained_evaluation_values():
    m = initial_eval_metrics(b, [2.0, 2.0, 2.0], n)
    assert m["Top1_Acc_Stream/eval_phase/test_stream/Task000"] == pytest.approx((1 + 1 + 2) / 40)
    assert m["StreamForwardTransfer/eval_phase/test_stream"] == 0.0
