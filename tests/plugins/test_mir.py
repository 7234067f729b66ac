"""MIR's retrieval (cfs_plugins.mir): the loss increase under a virtual SGD step, computed by
hand for a linear model, and the candidates with the largest increase are the ones replayed."""

from __future__ import annotations

import math

import pytest
import torch

from cfs_plugins.mir import interference_scores, most_interfered


def ce(w: list[list[float]], x: list[float], y: int) -> float:
    """Cross-entropy of a bias-free 2-class linear model, by hand."""
    z = [sum(wi * xi for wi, xi in zip(row, x)) for row in w]
    return -(z[y] - math.log(sum(math.exp(v) for v in z)))


def test_interference_scores_by_hand():
    w = [[1.0, 0.0], [0.0, 1.0]]
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w))
    x_in, y_in, lr = [2.0, 0.0], 1, 0.5
    # gradient of CE at (x_in, y_in): (softmax(z) - onehot(y)) x^T with z = (2, 0)
    p0 = math.exp(2) / (math.exp(2) + 1)
    g = [[p0 * x_in[0], p0 * x_in[1]], [(1 - p0 - 1) * x_in[0], (1 - p0 - 1) * x_in[1]]]
    w2 = [[w[i][j] - lr * g[i][j] for j in range(2)] for i in range(2)]
    mem = [([1.0, 0.0], 0), ([0.0, 1.0], 1), ([1.0, 1.0], 0), ([3.0, 0.0], 0)]
    expect = [ce(w2, x, y) - ce(w, x, y) for x, y in mem]
    scores = interference_scores(model, torch.tensor([x_in]), torch.tensor([y_in]),
                                 torch.tensor([x for x, _ in mem]), torch.tensor([y for _, y in mem]), lr)
    assert scores.tolist() == pytest.approx(expect, rel=1e-5)
    assert model.weight.tolist() == w  # the virtual step leaves the model alone
    # the step moves class-0 weight off x0 towards class 1: class-0 samples along x0 are hurt,
    # most for x = (3, 0); (0, 1) is orthogonal to the incoming sample, so its loss is unchanged
    assert expect[3] > expect[2] > expect[0] > 0 and expect[1] == 0  # 2.33 > 1.23 > 0.83 > 0
    chosen = most_interfered(scores, 2).tolist()
    assert chosen == sorted(range(4), key=lambda i: -expect[i])[:2] == [3, 2]


def test_most_interfered_takes_all_when_fewer():
    assert most_interfered(torch.tensor([0.1, 0.5]), 10).tolist() == [1, 0]


def test_mir_replays_the_most_interfered_candidates():
    """In a run, the replayed rows are the candidates with the largest scores."""
    from cfs import testing

    chosen: list[tuple[list[float], list[int]]] = []
    import cfs_plugins.mir as mir

    original = mir.most_interfered

    def spy(scores, k):
        out = original(scores, k)
        chosen.append((scores.tolist(), out.tolist()))
        return out

    mir.most_interfered = spy
    try:
        testing.run("mir", scenario="split-digits", epochs=1, batch_size=10, lr=0.1, options={"mir": {"subsample": 20}})
    finally:
        mir.most_interfered = original
    assert chosen
    for scores, picked in chosen:
        k = min(10, len(scores))
        assert len(picked) == k
        assert sorted(scores, reverse=True)[:k] == pytest.approx([scores[i] for i in picked])
