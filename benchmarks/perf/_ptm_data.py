"""Shared by the PTM benchmark scripts: a per-class subset of real CIFAR-10 as a split stream."""

from __future__ import annotations

import torch

from cfs.data import load_dataset
from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.data.transforms import BatchTransform
from cfs.scenarios.base import Scenario
from cfs.scenarios.class_incremental import build_stream, class_order, split_classes


def per_class(data: ArrayDataset, n: int) -> ArrayDataset:
    """The first ``n`` images of every class (the archive's order, so reproducible)."""
    idx = torch.cat([torch.nonzero(data.y == c).flatten()[:n] for c in range(data.num_classes)])
    return data.subset(idx)


def split_cifar10_subset(root: str, n_train: int, n_test: int, size: int, experiences: int = 5) -> Scenario:
    full = load_dataset("cifar10", root=root)
    data = DataSplit("cifar10", per_class(full.train, n_train), per_class(full.test, n_test), full.mean, full.std)
    order = class_order(10, 1993)
    exps = build_stream(data, order, split_classes(10, experiences))
    return Scenario(f"split-cifar10-{n_train}pc-{size}px", "class-incremental", exps, order, [],
                    BatchTransform(mean=data.mean, std=data.std, resize=size), data.input_shape)
