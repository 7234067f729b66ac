"""ER-ACE's asymmetric cross-entropy against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cfs.losses import er_ace_loss
from cfs.losses.er_ace import present_class_mask

# rows 0, 1 incoming (classes 2 and 3 present), row 2 replayed (class 0); 4 seen classes
LOGITS = torch.tensor([[1.0, 2.0, 0.0, 3.0],
                       [0.0, 5.0, math.log(3.0), 0.0],
                       [math.log(2.0), 0.0, 0.0, 0.0]])
Y = torch.tensor([2, 3, 0])
REPLAYED = torch.tensor([False, False, True])


def test_incoming_masked_to_present_classes_plus_replayed_over_all_by_hand():
    # row 0 keeps logits (0, 3) of classes 2, 3 -> -ln(e^0 / (e^0 + e^3)) = ln(1 + e^3)
    # row 1 keeps (ln 3, 0), label 3 -> -ln(1 / (3 + 1)) = ln 4   (logit 5 of class 1 masked out)
    # row 2 replayed over all four: -ln(2 / (2 + 1 + 1 + 1)) = ln(5 / 2)
    expected = (math.log(1 + math.e**3) + math.log(4)) / 2 + math.log(5 / 2)
    assert er_ace_loss(LOGITS, Y, REPLAYED, n_seen=4).item() == pytest.approx(expected, rel=1e-6)


def test_the_two_means_are_summed_not_pooled():
    # three rows pooled would weigh the replayed row 1/3; ER-ACE weighs each part's mean 1
    inc = er_ace_loss(LOGITS[:2], Y[:2], REPLAYED[:2], n_seen=4)
    rep = er_ace_loss(LOGITS[2:], Y[2:], REPLAYED[2:], n_seen=4)
    assert rep.item() == pytest.approx(math.log(5 / 2), rel=1e-6)
    assert er_ace_loss(LOGITS, Y, REPLAYED, n_seen=4).item() == pytest.approx((inc + rep).item(), rel=1e-6)


def test_without_replayed_rows_it_is_the_masked_cross_entropy_only():
    # all three rows incoming, classes {0, 2, 3} present: class 1's logit is masked out
    got = er_ace_loss(LOGITS, Y, torch.zeros(3, dtype=torch.bool), n_seen=4).item()
    row0 = math.log(math.e + 1 + math.e**3)          # keeps (1, 0, 3), label 2 at logit 0
    row1 = math.log(1 + 3 + 1)                        # keeps (0, ln 3, 0), label 3 at logit 0
    row2 = -math.log(2 / (2 + 1 + 1))                 # keeps (ln 2, 0, 0), label 0
    assert got == pytest.approx((row0 + row1 + row2) / 3, rel=1e-6)


def test_unseen_classes_logits_stay_unmasked():
    # a head sized for more classes than seen (n_seen = 3): column 3 belongs to a class not
    # seen yet and is kept, as the authors' mask[:, seen_so_far.max():] = 1 keeps it
    logits = torch.tensor([[0.0, 7.0, 0.0, math.log(2.0)]])
    got = er_ace_loss(logits, torch.tensor([2]), torch.tensor([False]), n_seen=3).item()
    assert got == pytest.approx(math.log(3.0), rel=1e-6)  # keeps (0, ln 2) of classes 2, 3
    assert present_class_mask(torch.tensor([2]), 4, n_seen=3).tolist() == [False, False, True, True]
    assert present_class_mask(torch.tensor([2, 0]), 4).tolist() == [True, False, True, False]


def test_masked_logits_get_no_gradient_and_old_classes_are_not_pushed_down():
    logits = LOGITS.clone().requires_grad_(True)
    er_ace_loss(logits, Y, REPLAYED, n_seen=4).backward()
    g = logits.grad
    assert torch.all(g[:2, :2] == 0), "absent classes of incoming rows must get no gradient"
    assert torch.all(g[2] != 0), "replayed rows train every class"
    # plain cross-entropy would push the old classes' logits of the incoming rows down
    plain = LOGITS.clone().requires_grad_(True)
    F.cross_entropy(plain, Y).backward()
    assert torch.all(plain.grad[:2, :2] > 0)


def test_no_rows_of_a_part_contributes_zero():
    only_replayed = er_ace_loss(LOGITS, Y, torch.ones(3, dtype=torch.bool), n_seen=4)
    assert only_replayed.item() == pytest.approx(F.cross_entropy(LOGITS, Y).item(), rel=1e-6)
    empty = er_ace_loss(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool))
    assert empty.item() == 0.0


def test_half_precision_logits_give_a_finite_float32_loss():
    loss = er_ace_loss(LOGITS.half(), Y, REPLAYED, n_seen=4)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
