"""The exemplar memories: budget, balance, herding order, shrinking, reservoir uniformity."""

from __future__ import annotations

import pytest
import torch

from cfs.data.arrays import ArrayDataset
from cfs.errors import CfsError
from cfs.memory import ClassBalancedMemory, ReservoirBuffer, herding_order


def _classes(classes, per_class=20):
    y = torch.tensor(classes).repeat_interleave(per_class)
    x = torch.arange(len(y), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()
    return ArrayDataset(x, y)


def test_herding_picks_the_known_order():
    # unit features; class mean (0.47, 0.69). Greedy by hand: (0.6,0.8) is closest (0.17),
    # then (0.28,0.96) keeps the running mean closest (0.19), then (1,0) (0.19 vs 0.29), then (0,1)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.28, 0.96]])
    assert herding_order(feats, 4).tolist() == [2, 3, 0, 1]
    assert herding_order(feats, 2).tolist() == [2, 3]


def test_budget_balance_and_shrinking_keep_the_priority_prefix():
    mem = ClassBalancedMemory(budget=10, selection="reservoir")
    g = torch.Generator().manual_seed(0)
    mem.update(_classes([0, 1]), generator=g)
    assert mem.counts() == {0: 5, 1: 5}
    first = mem.store[0][0].clone()
    mem.update(_classes([2, 3]), generator=g)
    assert mem.counts() == {0: 2, 1: 2, 2: 2, 3: 2} and len(mem) <= 10
    assert torch.equal(mem.store[0][0], first[:2])  # the shrunk class kept its first two
    mem.update(_classes([4, 5, 6]), generator=g)
    assert set(mem.counts().values()) == {1} and len(mem) == 7
    assert mem.dataset().x.dtype == torch.uint8  # stored as compactly as the data
    with pytest.raises(CfsError):
        mem.update(_classes(list(range(7, 20))), generator=g)  # 19 classes > budget 10


def test_herding_memory_stores_in_herding_order():
    data = ArrayDataset(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.28, 0.96]]).view(4, 2, 1, 1),
                        torch.zeros(4, dtype=torch.long))
    mem = ClassBalancedMemory(budget=3, selection="herding")
    mem.update(data, embed=lambda x: x.flatten(1))
    assert torch.allclose(mem.store[0][0].flatten(1), torch.tensor([[0.6, 0.8], [0.28, 0.96], [1.0, 0.0]]))


def test_fixed_per_class_quota_grows_the_memory():
    mem = ClassBalancedMemory(per_class=3, selection="reservoir")
    mem.update(_classes([0, 1]))
    mem.update(_classes([2, 3]))
    assert mem.counts() == {0: 3, 1: 3, 2: 3, 3: 3}


def test_reservoir_never_exceeds_capacity_and_is_uniform():
    kept_first_half = 0
    for seed in range(20):
        buf = ReservoirBuffer(100)
        g = torch.Generator().manual_seed(seed)
        for start in range(0, 1000, 50):
            ids = torch.arange(start, start + 50)
            buf.add(ids.view(-1, 1).float(), ids, generator=g)
            assert len(buf) <= 100
        kept_first_half += int((buf.y < 500).sum())
    # each of the 1000 examples is kept with probability 1/10: about 50 of 100 from the first half
    assert 900 < kept_first_half < 1100  # 20 runs x 50 expected; std ~ 22


def test_reservoir_stores_logits_of_growing_width():
    buf = ReservoirBuffer(4)
    buf.add(torch.zeros(2, 1), torch.tensor([0, 1]), torch.ones(2, 2))
    buf.add(torch.zeros(2, 1), torch.tensor([2, 3]), torch.full((2, 4), 2.0))
    assert buf.logits.shape == (4, 4) and buf.widths.tolist() == [2, 2, 4, 4]
    assert buf.logits[0].tolist() == [1.0, 1.0, 0.0, 0.0]
