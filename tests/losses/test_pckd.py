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


def test_pckd_loss_weights_its_four_terms():
    from torch import nn

    from cfs.losses import PCKDHeads, feature_alignment_loss, head_matrix, kd_loss, pckd_loss

    torch.manual_seed(0)
    heads = PCKDHeads(3, 3).eval()
    s_head, t_head = nn.Linear(3, 4), nn.Linear(3, 2)  # student knows 4 classes, teacher the first 2
    y = torch.tensor([0, 1, 3])
    f_s, f_t = torch.randn(6, 3), torch.randn(6, 3)  # two views of three samples
    z_s, z_t = torch.randn(3, 4), torch.randn(6, 2)
    args = (heads, f_s, z_s, y, f_t, z_t, s_head, t_head, 2, 1)
    zero = dict(delta=0.0, beta=0.0, alpha=0.0, phi=0.0)
    assert pckd_loss(*args, **zero).item() == 0.0
    align = pckd_loss(*args, **{**zero, "phi": 3.0}).item()
    assert align == pytest.approx(3.0 * feature_alignment_loss(heads.mlp(f_s), f_t).item(), rel=1e-5)
    centres = pckd_loss(*args, **{**zero, "alpha": 2.0}).item()  # MSE of the first two [W | b] rows
    want = (head_matrix(s_head, 2) - head_matrix(t_head, 2)).pow(2).mean().item()
    assert centres == pytest.approx(2.0 * want, rel=1e-5)
    # epoch 1: every sample's CE ratio r_i <= 1.005 keeps weight 1, else exp(-r^2)
    ce = torch.nn.functional.cross_entropy(z_s, y, reduction="none")
    w = pckd_preview_weights(ce, 1)
    kd = pckd_loss(*args, **{**zero, "delta": 1.0}).item()
    assert kd == pytest.approx((w * kd_loss(z_s[:, :2], z_t[:3], 4.0, reduction="none")).mean().item(), rel=1e-5)


def test_view_features_keeps_view_zero_and_rotates_the_rest():
    from cfs.losses import rotated_views, view_features

    x = torch.arange(8.0).view(2, 1, 2, 2)

    class Flatten(torch.nn.Module):
        def forward_all(self, x):
            return x.flatten(1), None

    given = torch.full((2, 4), -1.0)  # view 0 is taken as computed, not recomputed
    out = view_features(Flatten(), x, given, 3)
    assert out.shape == (6, 4) and torch.equal(out[:2], given)
    assert torch.equal(out[2:], rotated_views(x, 3)[2:].flatten(1))
    assert out[2].tolist() == [1.0, 3.0, 0.0, 2.0]  # [[0,1],[2,3]] rotated 90 degrees: [[1,3],[0,2]]
    assert view_features(Flatten(), x, given, 1) is given
