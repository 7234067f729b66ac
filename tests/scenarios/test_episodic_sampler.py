"""The episode sampler: shape contract, class balance, seeding, errors; class splits."""

from __future__ import annotations

import pytest
import torch

from cfs.data.arrays import ArrayDataset
from cfs.data.transforms import BatchTransform
from cfs.errors import CfsError
from cfs.scenarios.episodic import EpisodeSampler, EpisodeShape, split_classes_by_spec


def pool(n_classes: int = 12, per_class: int = 25, uneven: bool = False) -> ArrayDataset:
    counts = [per_class + (c % 3 if uneven else 0) for c in range(n_classes)]
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    y = y[perm]
    # pixel value = image index, so gathered images can be traced back to pool rows
    x = torch.arange(len(y), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return ArrayDataset(x, y)


IDENTITY = BatchTransform(mean=(0.0,), std=(1.0,))


@pytest.mark.parametrize("uneven", [False, True])
def test_episode_shape_contract_and_class_balance(uneven):
    data = pool(uneven=uneven)
    classes = [1, 3, 4, 6, 7, 9, 10]
    sampler = EpisodeSampler(data, classes, EpisodeShape(5, 2, 3))
    s, q = sampler.sample_indices(8, torch.Generator().manual_seed(1))
    tasks = sampler.batch(s, q, IDENTITY, torch.device("cpu"))
    assert tasks.support_x.shape == (8, 10, 1, 2, 2) and tasks.query_x.shape == (8, 15, 1, 2, 2)
    assert tasks.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert tasks.query_y[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    for t in range(8):
        rows_s = tasks.support_x[t, :, 0, 0, 0].long()
        rows_q = tasks.query_x[t, :, 0, 0, 0].long()
        assert len(set(rows_s.tolist()) | set(rows_q.tolist())) == 25  # no image twice in a task
        true_s, true_q = data.y[rows_s].view(5, 2), data.y[rows_q].view(5, 3)
        assert (true_s == true_s[:, :1]).all() and (true_q == true_s[:, :1]).all()  # one class per label
        assert len(set(true_s[:, 0].tolist())) == 5 and set(true_s[:, 0].tolist()) <= set(classes)


def test_classes_are_drawn_uniformly():
    data = pool(n_classes=10)
    sampler = EpisodeSampler(data, list(range(10)), EpisodeShape(2, 1, 1))
    s, _ = sampler.sample_indices(5000, torch.Generator().manual_seed(0))
    counts = torch.bincount(data.y[s.flatten()], minlength=10).float()
    assert (counts - 1000).abs().max() < 120  # expected 1000 each, sd about 28


def test_fixed_episodes_depend_on_seed_and_split_only():
    sampler = EpisodeSampler(pool(), list(range(12)), EpisodeShape(5, 1, 4))
    a = sampler.fixed_indices(20, seed=3, split="test")
    torch.manual_seed(123)  # global RNG state must not matter
    b = sampler.fixed_indices(20, seed=3, split="test")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], sampler.fixed_indices(20, seed=4, split="test")[1])
    assert not torch.equal(a[1], sampler.fixed_indices(20, seed=3, split="val")[1])


def test_too_few_classes_or_images_are_user_errors():
    with pytest.raises(CfsError, match="at least 5 classes"):
        EpisodeSampler(pool(), [0, 1, 2], EpisodeShape(5, 1, 1))
    with pytest.raises(CfsError, match="fewer than k_shot \\+ q_query"):
        EpisodeSampler(pool(per_class=5), list(range(6)), EpisodeShape(5, 1, 15))
    with pytest.raises(CfsError, match="bad episode shape"):
        EpisodeShape(1, 1, 1)


def test_split_classes_by_spec_counts_fractions_and_seed():
    a = split_classes_by_spec(20, {"train": 10, "val": 0.25, "test": 5}, seed=0)
    assert [len(a[s]) for s in ("train", "val", "test")] == [10, 5, 5]
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(20))
    assert a == split_classes_by_spec(20, {"train": 10, "val": 0.25, "test": 5}, seed=0)
    assert a != split_classes_by_spec(20, {"train": 10, "val": 0.25, "test": 5}, seed=1)
    with pytest.raises(CfsError):
        split_classes_by_spec(10, {"train": 8, "test": 5}, seed=0)
