"""PCKD's alignment, supervised contrast and preview weights against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from cfs.losses import category_contrastive_loss, feature_alignment_loss, pckd_preview_weights, supcon_loss


def test_feature_alignment_hand_value():
    pred = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    target = torch.tensor([[2.0, 0.0], [1.0, 0.0]])  # cosines 1 and 0
    assert feature_alignment_loss(pred, target).item() == pytest.approx(2 - 2 * 0.5)


def test_supcon_hand_value():
    # anchors (1,0), (1,0), (0,1), labels 0, 0, 1, tau = base_tau = 1:
    # l_1 = l_2 = -ln(e^1 / (e^1 + e^0)); anchor 3 has no positive -> 0
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    per = supcon_loss(a, torch.tensor([0, 0, 1]), tau=1.0, base_tau=1.0)
    expected = -math.log(math.e / (math.e + 1))
    assert per.tolist() == pytest.approx([expected, expected, 0.0], rel=1e-5)
    # the tau / base_tau factor scales the loss
    scaled = supcon_loss(a, torch.tensor([0, 0, 1]), tau=1.0, base_tau=0.5)
    assert scaled[0].item() == pytest.approx(2 * expected, rel=1e-5)


def test_category_contrast_sums_u_and_v_anchors():
    # u_1 = (1,0), u_2 = (0,1) labels 0, 1; v = u: each u_i's only positive is v_i (dot 1) and
    # its negatives are the other pair (dot 0): l = -ln(e / (e + 2)), per view l_u + l_v
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = category_contrastive_loss(u, u.clone(), torch.tensor([0, 1]), tau=1.0, base_tau=1.0)
    expected = -2 * math.log(math.e / (math.e + 2))
    assert loss.tolist() == pytest.approx([expected, expected], rel=1e-5)


def test_preview_weights_hand_value():
    # CE (1, 1, 4): mean 2, r = (0.5, 0.5, 2); epoch 1 threshold 1.005 -> w = (1, 1, e^-4)
    w = pckd_preview_weights(torch.tensor([1.0, 1.0, 4.0]), epoch=1)
    assert w.tolist() == pytest.approx([1.0, 1.0, math.exp(-4)], rel=1e-6)
    # by epoch 200 the threshold 1.005^200 = 2.71 covers r = 2: every sample counts fully
    assert pckd_preview_weights(torch.tensor([1.0, 1.0, 4.0]), epoch=200).tolist() == [1.0, 1.0, 1.0]


def test_preview_weights_detach_switch():
    ce = torch.tensor([1.0, 1.0, 4.0], requires_grad=True)
    assert not pckd_preview_weights(ce, 1).requires_grad
    assert pckd_preview_weights(ce, 1, detach=False).requires_grad


def test_teacher_gets_no_gradient(no_teacher_grad):
    g = torch.Generator().manual_seed(0)
    no_teacher_grad(feature_alignment_loss, torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g))
