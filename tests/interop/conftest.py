"""A tiny, learnable class-incremental Avalanche benchmark (Gaussian clusters) shared by the
interop and differential tests."""

from __future__ import annotations

import torch


def clusters(n_classes: int = 6, per_class: int = 24, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    y = torch.arange(n_classes).repeat_interleave(per_class)
    x = means[y] + torch.randn(len(y), dim, generator=g)
    return x.float(), y


def make_benchmark(n_experiences: int = 3, class_order: list[int] | None = None):
    """``nc_benchmark`` over Gaussian clusters: 6 classes, 2 per experience, no task labels."""
    from avalanche.benchmarks import nc_benchmark
    from torch.utils.data import TensorDataset

    xtr, ytr = clusters(seed=0)
    xte, yte = clusters(per_class=10, seed=1)
    order = class_order if class_order is not None else list(range(6))
    return nc_benchmark(TensorDataset(xtr, ytr), TensorDataset(xte, yte), n_experiences=n_experiences,
                        task_labels=False, shuffle=False, fixed_class_order=order)


import pytest  # noqa: E402


@pytest.fixture
def avalanche_benchmark():
    """Factory for the tiny benchmark; skips when avalanche-lib is not installed."""
    pytest.importorskip("avalanche")
    return make_benchmark
