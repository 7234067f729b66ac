"""TRG's graph, node and contextual losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from cfs.losses import contextual_loss, graph_loss, node_loss, trg_loss
from cfs.losses.trg import affinity_loss, sample_tokens


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_graph_loss_hand_value():
    # teacher nodes (1,0), (0,1), (1,0); student (1,0), (0,1), (0,1); tau = 1, self-edges out.
    # rows of cosines without the diagonal: teacher [0,1], [0,0], [1,0]; student [0,0], [0,1], [0,1]
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    e = math.e
    p01 = [1 / (1 + e), e / (1 + e)]  # softmax([0, 1])
    p10 = p01[::-1]
    half = [0.5, 0.5]
    expected = (_kl(p01, half) + _kl(half, p01) + _kl(p10, p01)) / 3
    assert graph_loss(student, teacher, tau=1.0).item() == pytest.approx(expected, rel=1e-5)
    assert graph_loss(teacher, teacher, tau=0.1).item() == pytest.approx(0.0, abs=1e-6)


def test_node_loss_hand_value():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    student = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])  # only the last differs: |(1,-1)|^2 = 2
    assert node_loss(student, teacher).item() == pytest.approx(2 / 3, rel=1e-6)


def _cx_by_hand(x, y, h=0.5, eps=1e-5):
    """The contextual loss of one image, element by element."""
    n = len(x)
    mu = [sum(v[k] for v in x) / n for k in range(2)]

    def unit(v):
        c = [v[0] - mu[0], v[1] - mu[1]]
        r = math.hypot(*c)
        return [c[0] / r, c[1] / r]

    xs, ys = [unit(v) for v in x], [unit(v) for v in y]
    d = [[1 - (xs[i][0] * ys[j][0] + xs[i][1] * ys[j][1]) for j in range(n)] for i in range(n)]
    total = 0.0
    for j in range(n):
        dmin = min(d[k][j] for k in range(n))
        w = [math.exp((1 - d[i][j] / (dmin + eps)) / h) for i in range(n)]
        total += max(wi / sum(w) for wi in w)
    return -math.log(total / n)


def test_contextual_loss_hand_value():
    x = [[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]
    y = [[0.2, 1.0], [1.0, 1.0], [-1.0, 0.5]]  # tokens between the teacher's: a soft match
    loss = contextual_loss(torch.tensor([y]), torch.tensor([x]), h=2.0)
    assert loss.item() == pytest.approx(_cx_by_hand(x, y, h=2.0), rel=1e-4)
    # identical token sets: every student token finds its teacher token, CX_b ~ 1
    same = contextual_loss(torch.tensor([x]), torch.tensor([x]))
    assert same.item() == pytest.approx(0.0, abs=1e-3)
    assert loss.item() > 0.05


def test_affinity_fallback_and_total():
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    s = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # off-diagonal cosine 1 vs 0: two entries of 1
    assert affinity_loss(s, t).item() == pytest.approx(2 / 4)
    total = trg_loss(s, t, graph=0, context=1, node=0, context_form="affinity")
    assert total.item() == pytest.approx(0.5)


def test_sampling_keeps_matching_positions():
    s = torch.arange(2 * 40 * 3, dtype=torch.float32).view(2, 40, 3)
    ss, tt = sample_tokens(s, s * 2, max_nodes=10, per_image=4, generator=torch.Generator().manual_seed(0))
    assert ss.shape == (8, 3) and torch.equal(tt, ss * 2)


def test_teacher_gets_no_gradient(no_teacher_grad):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    no_teacher_grad(lambda a, b: trg_loss(a, b), s, t)
    no_teacher_grad(lambda a, b: graph_loss(a.view(-1, 4), b.view(-1, 4)), s, t)


def test_align_tokens_pools_the_larger_grid_by_hand():
    from cfs.losses import align_tokens

    # a 4x4 grid of one channel holding 0..15 row-major -> 2x2 means of its 2x2 blocks
    big = torch.arange(16.0).view(1, 16, 1)
    small = torch.zeros(1, 4, 3)
    s, t = align_tokens(big, small)
    assert t is small and s.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    t2, s2 = align_tokens(small, big)  # either side may be the larger one
    assert s2.flatten().tolist() == [2.5, 4.5, 10.5, 12.5] and t2 is small
    same = torch.ones(2, 4, 3)
    assert align_tokens(same, small)[0] is same  # equal grids pass through
