"""TPN label propagation as GP-MAML uses it, against hand-computed values."""

from __future__ import annotations

import math

import torch

from cfs.meta.label_propagation import RelationScale, label_propagation, tokens_to_map, topk_affinity


def test_two_separated_clusters_propagate_to_hand_computed_scores():
    """Support s0 = 0 (class 0), s1 = 10 (class 1), queries q0 = 0, q1 = 10 (1-d, sigma = 1).

    W is block diagonal: exp(0) = 1 inside a cluster, exp(-50) ~ 0 across. Each block has
    D = 2, S = [[.5, .5], [.5, .5]], and (I - 0.99 S)^-1 = 1/(1 - 0.99) [[1 - .495, .495],
    [.495, 1 - .495]] = [[50.5, 49.5], [49.5, 50.5]]; so F(s0) = (50.5, 0), F(q0) = (49.5, 0),
    F(s1) = (0, 50.5), F(q1) = (0, 49.5): q0 -> class 0, q1 -> class 1."""
    emb = torch.tensor([[0.0], [10.0], [0.0], [10.0]], dtype=torch.float64)
    sigma = torch.ones(4, 1, dtype=torch.float64)
    f = label_propagation(emb, sigma, torch.tensor([0, 1]), n_way=2, k=20, alpha=0.99)
    expected = torch.tensor([[50.5, 0.0], [0.0, 50.5], [49.5, 0.0], [0.0, 49.5]], dtype=torch.float64)
    torch.testing.assert_close(f, expected, atol=1e-6, rtol=1e-6)
    assert f[2:].argmax(1).tolist() == [0, 1]


def test_affinity_scales_by_sigma_and_averages_over_dimensions():
    """e0 = (0, 0), e1 = (2, 0) with sigma = (1, 2): e1/2 = (1, 0), mean_d (1^2, 0) = 0.5,
    so W01 = exp(-0.25)."""
    emb = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    w = topk_affinity(emb, torch.tensor([[1.0], [2.0]], dtype=torch.float64), k=20)
    torch.testing.assert_close(w, torch.tensor([[1.0, math.exp(-0.25)], [math.exp(-0.25), 1.0]], dtype=torch.float64))


def test_topk_keeps_k_per_row_then_symmetrizes_by_union():
    """Points 0, 1, 3, 7 on a line, k = 2 (self + nearest): 0 keeps 1, 1 keeps 0, 3 keeps 1,
    7 keeps 3. Union: edges {0-1, 1-3, 3-7}; 0-3, 0-7, 1-7 are cut."""
    emb = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    w = topk_affinity(emb, torch.ones(4, 1, dtype=torch.float64), k=2)
    kept = (w > 0).int()
    assert kept.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    assert math.isclose(w[1, 2].item(), math.exp(-0.5 * 4))  # survived through row 2's choice


def test_relation_scale_shapes_follow_the_feature_map():
    for side in (5, 1):  # TPN's 84x84 Conv-4 map (FC 4 -> 8) and Omniglot's 28x28 (FC 1 -> 8)
        psi = RelationScale(8, side)
        assert psi(torch.randn(6, 8, side, side)).shape == (6, 1)
    assert RelationScale(64, 5).fc3.in_features == 4
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)  # (M, h*w, C)
    fmap = tokens_to_map(tokens)
    assert fmap.shape == (2, 3, 2, 2) and fmap[0, :, 0, 1].tolist() == tokens[0, 1].tolist()
