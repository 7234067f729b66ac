"""Simplex ETF geometry and class-mean prototypes (METHODS.md §10)."""

from __future__ import annotations

import pytest
import torch

from cfs.models.prototypes import PrototypeBank, class_means, cosine_scores, orthonormal_basis, simplex_etf


def test_etf_has_unit_columns_and_equal_angles_for_every_k_it_grows_through():
    basis = orthonormal_basis(64, 40, seed=3)
    assert torch.allclose(basis.T @ basis, torch.eye(40, dtype=basis.dtype), atol=1e-12)
    for k in range(2, 41):
        E = simplex_etf(basis, k)
        assert E.shape == (64, k)
        gram = E.T @ E
        assert torch.allclose(torch.diagonal(gram), torch.ones(k, dtype=E.dtype), atol=1e-12)
        off = gram[~torch.eye(k, dtype=torch.bool)]
        assert torch.allclose(off, torch.full_like(off, -1.0 / (k - 1)), atol=1e-12)
        # the columns are centred: a simplex spans K-1 dimensions
        assert torch.allclose(E.sum(1), torch.zeros(64, dtype=E.dtype), atol=1e-12)


def test_etf_is_seeded_and_needs_enough_dimensions():
    assert torch.equal(orthonormal_basis(16, 8, seed=1), orthonormal_basis(16, 8, seed=1))
    assert not torch.equal(orthonormal_basis(16, 8, seed=1), orthonormal_basis(16, 8, seed=2))
    with pytest.raises(ValueError):
        orthonormal_basis(4, 5)


def test_class_means_and_cosine_bank():
    f = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    y = torch.tensor([5, 5, 2, 2])
    means = class_means(f, y, [2, 5])
    assert torch.equal(means, torch.tensor([[0.0, 3.0], [2.0, 0.0]]))
    bank = PrototypeBank()
    bank.set([2, 5], means)
    assert bank.prototypes.shape == (6, 2)
    scores = bank.scores(torch.tensor([[1.0, 1.0]]), scale=2.0)
    assert scores[0, 2].item() == pytest.approx(2 / 2**0.5) and scores[0, 0].item() == 0.0
    assert torch.allclose(cosine_scores(torch.tensor([[0.0, 5.0]]), means), torch.tensor([[1.0, 0.0]]))
