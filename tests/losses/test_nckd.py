"""NCKD's NC1 / NC2 terms and the class-mean EMA against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from cfs.losses import ClassMeanEMA, centred_directions, class_means, nc1_loss, nc2_loss, nc3_logits
from cfs.losses.nckd import etf_gram


def test_centred_directions():
    d = centred_directions(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([1.0, 1.0]))
    r = 1 / math.sqrt(2)
    assert torch.allclose(d, torch.tensor([[r, -r], [-r, r]]), atol=1e-6)


def test_nc1_hand_value():
    # sample 0: normalize((1,0) - 0) = (1,0) vs class-0 direction (0,1): distance^2 = 2;
    # sample 1: normalize((2,0)) = (1,0) vs class-1 direction (1,0): 0; mean = 1
    dirs = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    feats = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    assert nc1_loss(feats, torch.tensor([0, 1]), dirs, torch.zeros(2)).item() == pytest.approx(1.0)


def test_nc2_hand_values():
    student = torch.eye(2)  # Gram I
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # Gram all ones
    assert nc2_loss(student, teacher).item() == pytest.approx(2 / 4)  # off-diagonal -1, -1
    assert nc2_loss(student, None, target="etf").item() == pytest.approx(2 / 4)  # ETF off-diagonal -1
    g3 = etf_gram(3)
    assert torch.allclose(g3.diagonal(), torch.ones(3))
    assert g3[0, 1].item() == pytest.approx(-0.5)


def test_class_mean_ema_blends_and_keeps_batch_gradient():
    ema = ClassMeanEMA(n_classes=3, dim=2, momentum=0.9)
    ema.update(torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([0, 0]))  # class 0 starts at (2, 0)
    z = torch.tensor([[0.0, 4.0], [5.0, 5.0]], requires_grad=True)
    means, glob = ema.update(z, torch.tensor([0, 1]))
    assert means[0].tolist() == pytest.approx([0.9 * 2 + 0.1 * 0, 0.1 * 4])
    assert means[1].tolist() == pytest.approx([5.0, 5.0])  # first seen: its batch mean
    assert means[2].tolist() == [0.0, 0.0] and not bool(ema.seen[2])
    assert glob.tolist() == pytest.approx([0.9 * 2.0 + 0.1 * 2.5, 0.1 * 4.5])
    means[0].sum().backward()
    assert z.grad[0].tolist() == pytest.approx([0.1, 0.1]) and z.grad[1].tolist() == [0.0, 0.0]


def test_teacher_gets_no_gradient(no_teacher_grad):
    y = torch.tensor([0, 1, 2])
    no_teacher_grad(lambda s, t: nc1_loss(s, y, t, torch.zeros(3)), torch.randn(3, 3), torch.eye(3))
    no_teacher_grad(lambda s, t: nc2_loss(s, t), torch.randn(3, 3), torch.randn(3, 3))


def test_class_means_by_hand():
    f = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    means, glob, present = class_means(f, torch.tensor([0, 0, 2]), 3)
    assert torch.allclose(means, torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 2.0]]))
    assert torch.allclose(glob, torch.tensor([4 / 3, 2 / 3]))
    assert present.tolist() == [True, False, True]


def test_nc3_logits_by_hand():
    # class means (1, 0) and (0, 1): global mean (0.5, 0.5), directions (1, -1)/sqrt2 and (-1, 1)/sqrt2
    dirs = centred_directions(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0.5, 0.5]))
    logits = nc3_logits(torch.tensor([[2.0, 0.0], [1.0, 3.0]]), dirs)
    # (2, 0): cos = +-1/sqrt2; (1, 3): cos = -+(2/sqrt10)/sqrt2 = -+1/sqrt5
    expected = 16 * torch.tensor([[2 ** -0.5, -(2 ** -0.5)], [-(5 ** -0.5), 5 ** -0.5]])
    assert torch.allclose(logits, expected, atol=1e-6)
    assert logits.argmax(1).tolist() == [0, 1]  # nearest class centre by angle


def test_nckd_loss_is_kd_plus_nc1_plus_nc2_over_the_teachers_classes():
    from cfs.losses import kd_loss, nckd_loss

    # teacher directions e_x, e_y for classes 0, 1 (global mean 0); class 2 has no teacher mean
    dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    glob, present = torch.zeros(2), torch.tensor([True, True, False])
    z = torch.tensor([[2.0, 0.0], [0.0, 3.0], [5.0, 5.0]])  # class 0, 1 on their directions; class 2 ignored
    y = torch.tensor([0, 1, 2])
    s_logits, t_logits = torch.randn(3, 3), torch.randn(3, 3)
    ema = ClassMeanEMA(3, 2)
    loss = nckd_loss(s_logits, t_logits, z, y, dirs, glob, present, ema, kd=2.0, lam1=5.0, lam2=7.0)
    # NC1 = 0 (each normalised feature is its direction); student means (2,0), (0,3) have global
    # mean (1, 1.5): centred directions (1,-1.5)/|.|, (-1,1.5)/|.| have cosine -1, the teacher's 0,
    # so NC2 = (0 + 1 + 1 + 0) / 4 = 0.5
    assert loss.item() == pytest.approx(2.0 * kd_loss(s_logits, t_logits).item() + 7.0 * 0.5, rel=1e-5)
    assert ema.seen.tolist() == [True, True, False]  # the unknown class never enters the EMA
    # with no known class in the batch only the KD term is left
    only = nckd_loss(s_logits[2:], t_logits[2:], z[2:], y[2:], dirs, glob, present, ClassMeanEMA(3, 2))
    assert only.item() == pytest.approx(kd_loss(s_logits[2:], t_logits[2:]).item())


@pytest.mark.parametrize("target", ["teacher", "etf"])
def test_nc2_over_a_class_mask_equals_nc2_over_the_selected_classes(target):
    g = torch.Generator().manual_seed(0)
    student = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1)
    teacher = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1)
    cls = torch.tensor([True, False, True, True, False])
    expected = nc2_loss(student[cls], teacher[cls], target)
    assert nc2_loss(student, teacher, target, classes=cls).item() == pytest.approx(expected.item(), rel=1e-5)


def test_nc1_over_a_row_mask_equals_nc1_over_the_selected_rows():
    g = torch.Generator().manual_seed(1)
    z, dirs = torch.randn(4, 3, generator=g), torch.nn.functional.normalize(torch.randn(3, 3, generator=g), dim=1)
    y, rows, glob = torch.tensor([0, 2, 1, 2]), torch.tensor([True, False, True, True]), torch.randn(3, generator=g)
    expected = nc1_loss(z[rows], y[rows], dirs, glob)
    assert nc1_loss(z, y, dirs, glob, rows=rows).item() == pytest.approx(expected.item(), rel=1e-6)
    assert nc1_loss(z, y, dirs, glob, rows=torch.zeros(4, dtype=torch.bool)).item() == 0.0
