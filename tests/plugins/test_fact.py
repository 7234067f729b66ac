"""FACT: the forward-compatible loss terms by hand, the virtual-class-aware inference by hand,
the backbone split for manifold mixup, and a full run that learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cfs.evaluation.fscil import fscil_metrics
from cfs.models.backbones import mlp, resnet20
from cfs_plugins.fact import (
    Fact,
    fact_loss,
    forward_compatible_loss,
    mixup_virtual_losses,
    split_backbone,
    virtual_calibrated_scores,
)
from _ptm_support import ptm_pm, ptm_run, synthetic_scenario  # noqa: F401 (fixtures)


def lse(*v: float) -> float:
    return math.log(sum(math.exp(x) for x in v))


def test_forward_compatible_loss_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.5, -0.3]])  # 2 base classes, 2 virtual
    y = torch.tensor([0])
    mask = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # virtual 2 <- base 0, virtual 3 <- base 1
    # true class masked out; masked logits times mask[0] = (0, 0, 0.5, 0): target virtual class 2
    want = -0.5 + lse(1.0, 0.5, -0.3)
    assert forward_compatible_loss(logits, y, mask, 2).item() == pytest.approx(want, abs=1e-6)
    # the code's product with the mask: a negative chosen logit loses to the zeros of unchosen
    # classes, so class 2 (mask 0, product 0) wins over class 3 (mask 1, product -0.3)
    mask_b = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    assert forward_compatible_loss(logits, y, mask_b, 2).item() == pytest.approx(want, abs=1e-6)
    # with y = 1 and mask_b, class 2 is chosen with product 0.5
    assert forward_compatible_loss(logits, torch.tensor([1]), mask_b, 2).item() == pytest.approx(
        -0.5 + lse(2.0, 0.5, -0.3), abs=1e-6)


def test_mixup_virtual_losses_by_hand():
    mixed = torch.tensor([[0.2, 1.0, 3.0, 2.0]])
    l3, l4 = mixup_virtual_losses(mixed, 2)
    assert l3.item() == pytest.approx(-3.0 + lse(0.2, 1.0, 3.0, 2.0), abs=1e-6)  # to virtual class 2
    assert l4.item() == pytest.approx(-1.0 + lse(0.2, 1.0, 2.0), abs=1e-6)  # class 2 masked, to base 1


def test_fact_loss_sums_the_terms_with_balance():
    logits = torch.tensor([[2.0, 1.0, 0.5, -0.3]])
    y, mask = torch.tensor([0]), torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    mixed = torch.tensor([[0.2, 1.0, 3.0, 2.0]])
    ce = -2.0 + lse(2.0, 1.0)  # base classes only
    l2 = -0.5 + lse(1.0, 0.5, -0.3)
    l3, l4 = -3.0 + lse(0.2, 1.0, 3.0, 2.0), -1.0 + lse(0.2, 1.0, 2.0)
    got = fact_loss(logits, y, mask, 2, mixed, balance=0.1).item()
    assert got == pytest.approx(ce + 0.1 * (l2 + l3 + l4), abs=1e-6)
    assert fact_loss(logits, y, mask, 2, None, balance=0.1).item() == pytest.approx(ce + 0.1 * l2, abs=1e-6)


def test_virtual_calibrated_scores_by_hand():
    f = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # two seen classes
    dummy = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # unit virtual prototypes
    # eta = 0: softmax of the cosine logits
    plain = torch.softmax(16 * torch.tensor([[1.0, 0.0]]), 1)
    assert torch.allclose(virtual_calibrated_scores(f, w, dummy, 0.0, 16.0, 40), plain)
    # P = V @ normalize(W^T, dim=-1): W^T = [[2, 0], [0, 1]] has unit rows after normalising -> P = V
    # r = normalize(f) @ V^T = (1, 0.6); with k = 1 only the 1 survives: r = (1, 0) -> r @ P = (1, 0)
    got = virtual_calibrated_scores(f, w, dummy, 1.0, 16.0, topk=1)
    assert torch.allclose(got, torch.softmax(torch.tensor([[1.0, 0.0]]), 1))
    # k = 2: r @ P = (1 + 0.36, 0.48)
    got = virtual_calibrated_scores(f, w, dummy, 0.5, 16.0, topk=40)
    want = 0.5 * torch.softmax(torch.tensor([[1.36, 0.48]]), 1) + 0.5 * plain
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: resnet20(3, 8), lambda: mlp(1, 4)])
def test_split_backbone_recomposes_the_backbone(make):
    net = make().eval()
    pre, post = split_backbone(net)
    x = torch.randn(2, *((3, 8, 8) if hasattr(net, "stages") else (1, 4, 4)))
    assert torch.allclose(post(pre(x)), net(x), atol=1e-5)


def test_fact_learns_and_keeps_its_virtual_prototypes(ptm_run):
    scenario = synthetic_scenario("fscil", n_classes=6)
    result = ptm_run("fact", scenario, head="cosine", epochs=4, lr=0.05, options={"fact": {"balance": 0.01}})
    strat: Fact = result.state.strategies[0]
    assert strat.n_base == 3 and strat.weight.shape[0] == 6  # 3 base rows + 3 virtual (one per novel class)
    assert strat.dummy.shape == (3, strat.weight.shape[1])
    assert torch.allclose(strat.dummy.norm(dim=1), torch.ones(3), atol=1e-5)
    assert strat.mask.shape == (3, 6) and strat.mask[:, 3:].sum(0).tolist() == [3.0, 3.0, 3.0]  # masknum 3 (capped)
    assert {e.experience for e in result.timings.epochs} == {0}
    res = result.state.results
    m = fscil_metrics(np.array(res.rows), np.array(res.test_sizes))
    assert m["session_accuracy"][-1] > 1 / 6 + 0.3
    assert m["novel_accuracy"][-1] > 1 / 6 + 0.2
    again = Fact(strat.options)
    again.load_state_dict(strat.state_dict())
    assert torch.equal(again.dummy, strat.dummy) and again.n_base == 3


def test_fact_base_loss_has_the_forward_compatible_terms(ptm_run):
    """balance = 0 is plain cosine cross-entropy on the base rows; balance > 0 changes training."""
    scenario = synthetic_scenario("fscil", n_classes=6)
    a = ptm_run("fact", scenario, head="cosine", epochs=2, lr=0.05, options={"fact": {"balance": 0.0}})
    b = ptm_run("fact", scenario, head="cosine", epochs=2, lr=0.05, options={"fact": {"balance": 1.0}})
    la = [e.loss for e in a.timings.epochs]
    lb = [e.loss for e in b.timings.epochs]
    assert lb[0] > la[0]  # the extra terms add to the loss
