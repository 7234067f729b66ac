"""KD, LwF's soft cross-entropy and the new-class cross-entropy against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from cfs.losses import kd_loss, new_class_cross_entropy, soft_cross_entropy


def test_kd_uniform_teacher_hand_value():
    # teacher uniform over 3 classes; student softmax = (1/2, 1/4, 1/4) at T = 1:
    # KL(u || s) = 1/3 [ln((1/3)/(1/2)) + 2 ln((1/3)/(1/4))] = 1/3 ln(32/27)
    student = torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0]])
    teacher = torch.zeros(2, 3)
    per = kd_loss(student, teacher, T=1.0, reduction="none")
    assert per[0].item() == pytest.approx(math.log(32 / 27) / 3, rel=1e-5)
    assert per[1].item() == pytest.approx(0.0, abs=1e-7)
    assert kd_loss(student, teacher, T=1.0).item() == pytest.approx(math.log(32 / 27) / 6, rel=1e-5)


def test_kd_temperature_squared_factor():
    # logits scaled by T=2 give, at T=2, the T=1 distributions above, times T^2 = 4
    student = torch.tensor([[2 * math.log(2.0), 0.0, 0.0]])
    assert kd_loss(student, torch.zeros(1, 3), T=2.0).item() == pytest.approx(4 * math.log(32 / 27) / 3, rel=1e-5)


def test_soft_cross_entropy_hand_value():
    # teacher (1/2, 1/4, 1/4) (logits ln2, 0, 0), student uniform: -sum p ln(1/3) = ln 3;
    # second sample: teacher uniform, student (1/2,1/4,1/4): -1/3 [ln 1/2 + 2 ln 1/4] = 5/3 ln 2
    teacher = torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0]])
    student = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    expected = (math.log(3) + 5 / 3 * math.log(2)) / 2
    assert soft_cross_entropy(student, teacher, T=1.0).item() == pytest.approx(expected, rel=1e-5)


def test_new_class_cross_entropy_hand_value():
    # n_old = 1, only new-class samples: label 2 sees logits [0, ln 3] -> -ln(3/4);
    # label 1 sees [0, 0] -> ln 2
    logits = torch.tensor([[5.0, 0.0, math.log(3.0)], [9.0, 0.0, 0.0]])
    y = torch.tensor([2, 1])
    expected = (math.log(4 / 3) + math.log(2)) / 2
    assert new_class_cross_entropy(logits, y, n_old=1).item() == pytest.approx(expected, rel=1e-5)


def test_new_class_cross_entropy_with_replayed_old_samples_uses_all_classes():
    # an old-class sample in the batch: plain CE over all three logits for both samples
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)], [0.0, 0.0, 0.0]])
    y = torch.tensor([2, 0])
    expected = (math.log(4 / 2) + math.log(3)) / 2
    assert new_class_cross_entropy(logits, y, n_old=1).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("fn", [lambda s, t: kd_loss(s, t, 4.0), lambda s, t: soft_cross_entropy(s, t, 2.0)])
def test_teacher_gets_no_gradient(fn, no_teacher_grad):
    g = torch.Generator().manual_seed(0)
    no_teacher_grad(fn, torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g))
