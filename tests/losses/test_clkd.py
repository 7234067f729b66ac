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


def test_covariance_form_is_the_non_squared_norm_by_hand():
    # same matrices as above: ||G_S - G_T||_F^2 = 41.25, C = 3 -> (1/C) ||.||_F = sqrt(41.25) / 3
    cov = clkd_loss(STUDENT, TEACHER, mu=0, beta=0, nu=1, form="covariance")
    assert cov.item() == pytest.approx(41.25 ** 0.5 / 3, rel=1e-5)
    # the default weights: mu (L_ins + beta L_cls) + nu L_cc
    expected = 0.5 * (0.08 / 6) + 0.4 * 41.25 ** 0.5 / 3
    assert clkd_loss(STUDENT, TEACHER, form="covariance").item() == pytest.approx(expected, rel=1e-5)
    # logits x10: covariances x100, so the non-squared distance grows x100 and the squared x10^4
    big = clkd_loss(10 * STUDENT, 10 * TEACHER, mu=0, beta=0, nu=1, form="covariance")
    assert big.item() == pytest.approx(100 * 41.25 ** 0.5 / 3, rel=1e-5)
    sq = clkd_loss(10 * STUDENT, 10 * TEACHER, mu=0, beta=0, nu=1, form="squared-covariance")
    assert sq.item() == pytest.approx(1e4 * 41.25 / 9, rel=1e-5)


def test_covariance_form_gradient_is_bounded_and_finite_at_equality():
    # d/dG_S (1/C)||G_S - G_T||_F = (G_S - G_T) / (C ||G_S - G_T||_F): Frobenius norm 1/C at any scale
    for scale in (1.0, 1e3):
        g_s = (scale * class_correlation(STUDENT)).requires_grad_(True)
        dist = torch.linalg.vector_norm(g_s - scale * class_correlation(TEACHER)) / 3
        dist.backward()
        assert torch.linalg.vector_norm(g_s.grad).item() == pytest.approx(1 / 3, rel=1e-5)
    # equal logits: loss 0 and a zero (not NaN) gradient
    s = TEACHER.clone().requires_grad_(True)
    loss = clkd_loss(s, TEACHER, mu=0, beta=0, nu=1, form="covariance")
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))


def test_pearson_form_by_hand():
    # B = 2: each centred column is +-(its half difference), so correlations are the sign
    # products: v = (1.5, 2, -0.5) and w = (2, 1.5, -1) have the same signs -> R_S = R_T, L_cc = 0
    assert clkd_loss(STUDENT, TEACHER, mu=0, beta=0, nu=1, form="pearson").item() == pytest.approx(0.0, abs=1e-6)
    # flip the sign of the teacher's last column against the first two -> w = (2, 1.5, +1):
    # R_T differs from R_S in the four entries (0,2), (2,0), (1,2), (2,1) by 2 each: 16 / 9
    flipped = torch.tensor([[4.0, 3.0, 2.0], [0.0, 0.0, 0.0]])
    assert clkd_loss(STUDENT, flipped, mu=0, beta=0, nu=1, form="pearson").item() == pytest.approx(16 / 9, rel=1e-5)
    with pytest.raises(ValueError):
        clkd_loss(STUDENT, TEACHER, form="nope")


def test_distill_loss_object_and_flag_use_the_form(capsys):
    from cfs.cli import main
    from cfs.losses.distill import CLKDLoss

    x = torch.zeros(2, 1)

    def teacher(_):
        return TEACHER

    for form in ("covariance", "pearson"):
        dist = CLKDLoss(form=form).build(teacher, None, None, None, torch.device("cpu"))
        want = clkd_loss(STUDENT, TEACHER, form=form)
        assert dist.extra(x, None, None, STUDENT, 1).item() == pytest.approx(want.item(), rel=1e-6)
    assert CLKDLoss().form == "pearson"
    with pytest.raises(ValueError):
        CLKDLoss(form="nope")
    # the flag belongs to --loss clkd only: one line, exit 2, before any data is loaded
    assert main(["distill", "--teacher", "t.pt", "--loss", "kd", "--clkd-form", "covariance"]) == 2
    assert "--clkd-form applies only with --loss clkd" in capsys.readouterr().err


def test_clkd_strategy_form_option():
    import math

    from cfs import testing
    from cfs.errors import CfsError

    with pytest.raises(CfsError, match="clkd.form"):
        testing.run("clkd", epochs=1, options={"clkd": {"form": "nope"}})
    run = testing.run("clkd", epochs=1, options={"clkd": {"form": "covariance"}})
    assert run.state.strategies[0].options.form == "covariance"
    assert math.isfinite(testing.final_accuracy(run)) and testing.final_accuracy(run) > 0.2
