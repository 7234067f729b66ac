"""CLKD's instance, class and correlation terms against a hand-computed example."""

from __future__ import annotations

import pytest
import torch

from cfs.losses import class_correlation, clkd_loss

# rows (3,4,0)/5 vs (4,3,0)/5 and (0,0,1) vs (0,0,1): L_ins = (0.2^2 + 0.2^2) / 6;
# every column normalises to the same unit vector in both: L_cls = 0;
# centred rows v = (1.5, 2, -0.5) and w = (2, 1.5, -1), B = 2: G_S = 2 v v^T, G_T = 2 w w^T,
# 2 (v v^T - w w^T) = [[-3.5, 0, 2.5], [0, 3.5, 1], [2.5, 1, -1.5]], squares sum 41.25
STUDENT = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
TEACHER = torch.tensor([[4.0, 3.0, 0.0], [0.0, 0.0, 2.0]])


def test_each_term_by_hand():
    assert clkd_loss(STUDENT, TEACHER, mu=1, beta=0, nu=0).item() == pytest.approx(0.08 / 6, rel=1e-5)
    assert clkd_loss(STUDENT, TEACHER, mu=1, beta=1, nu=0).item() == pytest.approx(0.08 / 6, rel=1e-5)
    assert clkd_loss(STUDENT, TEACHER, mu=0, beta=0, nu=1).item() == pytest.approx(41.25 / 9, rel=1e-5)


def test_default_weights_by_hand():
    expected = 0.5 * (0.08 / 6 + 2.0 * 0.0) + 0.4 * 41.25 / 9
    assert clkd_loss(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-5)


def test_correlation_shapes_and_values():
    g = class_correlation(STUDENT)
    assert g.shape == (3, 3)
    assert g[0, 1].item() == pytest.approx(2 * 1.5 * 2, rel=1e-6)
    gb = class_correlation(STUDENT, variant="batch")
    # row (3,4,0): centred (2/3, 5/3, -7/3); variance sum / (C-1) = (4+25+49)/9/2
    assert gb.shape == (2, 2)
    assert gb[0, 0].item() == pytest.approx(78 / 18, rel=1e-5)
    with pytest.raises(ValueError):
        class_correlation(STUDENT, variant="nope")


def test_teacher_gets_no_gradient(no_teacher_grad):
    no_teacher_grad(lambda s, t: clkd_loss(s, t), STUDENT + 0.1, TEACHER)
