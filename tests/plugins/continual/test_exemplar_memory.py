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


def test_reservoir_keeps_what_algorithm_r_keeps_row_by_row():
    """Batched adds (discarded rows go to a hidden row, nothing is filtered) keep exactly the
    examples, slots and logits that Algorithm R offered one example at a time keeps, given the
    same draws; a checkpoint round trip in the middle changes nothing."""
    g = torch.Generator().manual_seed(3)
    buf, ref_y, ref_z, seen = ReservoirBuffer(7), [None] * 7, [None] * 7, 0
    for step, b in enumerate([3, 5, 1, 8, 6, 2, 9, 4]):
        ids = torch.arange(seen, seen + b)
        z = torch.randn(b, 2 + step % 3)
        draws = torch.rand(b, generator=torch.Generator().set_state(g.get_state()))  # the draws add will make
        buf.add(ids.view(-1, 1).float(), ids, z, generator=g)
        for i in range(b):  # Algorithm R, one example at a time, with the same draws
            n = seen + i
            slot = n if n < 7 else int(draws[i] * (n + 1))
            if slot < 7:
                ref_y[slot], ref_z[slot] = int(ids[i]), z[i]
        seen += b
        if step == 3:
            restored = ReservoirBuffer(7)
            restored.load_state_dict(buf.state_dict())
            buf = restored
        assert buf.y.tolist() == ref_y[: len(buf)] + [0] * (7 - len(buf))
    assert buf.x.shape == (7, 1) and buf.x.flatten().long().tolist() == ref_y
    for k in range(7):
        w = int(buf.widths[k])
        assert w == ref_z[k].shape[0] and torch.equal(buf.logits[k, :w], ref_z[k])


def test_reservoir_stores_logits_of_growing_width():
    buf = ReservoirBuffer(4)
    buf.add(torch.zeros(2, 1), torch.tensor([0, 1]), torch.ones(2, 2))
    buf.add(torch.zeros(2, 1), torch.tensor([2, 3]), torch.full((2, 4), 2.0))
    assert buf.logits.shape == (4, 4) and buf.widths.tolist() == [2, 2, 4, 4]
    assert buf.logits[0].tolist() == [1.0, 1.0, 0.0, 0.0]


def _reference_herding(features: torch.Tensor, m: int) -> list[int]:
    """The distance formula of METHODS.md 11.3, one candidate distance per row per step."""
    phi = torch.nn.functional.normalize(features.float(), dim=1)
    mu, running = phi.mean(0), torch.zeros(phi.shape[1])
    available, chosen = torch.ones(len(phi), dtype=torch.bool), []
    for k in range(1, min(m, len(phi)) + 1):
        dist = (mu - (running + phi) / k).norm(dim=1).masked_fill(~available, float("inf"))
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += phi[i]
    return chosen


@pytest.mark.parametrize("n, dim, m", [(200, 16, 200), (300, 64, 30), (400, 8, 150)])
@pytest.mark.parametrize("gram_rows", [0, 10_000])  # matrix-vector steps; precomputed Gram matrix
@pytest.mark.parametrize("host_loop", [{"cpu"}, set()])  # NumPy steps; torch steps (as on a GPU)
def test_vectorised_herding_picks_what_the_distance_formula_picks(n, dim, m, gram_rows, host_loop, monkeypatch):
    import cfs.memory

    monkeypatch.setattr(cfs.memory, "GRAM_ROWS", gram_rows)
    monkeypatch.setattr(cfs.memory, "HOST_LOOP", frozenset(host_loop))
    feats = torch.randn(n, dim, generator=torch.Generator().manual_seed(n + dim))
    feats[5] = feats[3]  # an exact tie: the first index wins in both
    assert herding_order(feats, m).tolist() == _reference_herding(feats, m)


def test_memory_dataset_is_built_once_and_rebuilt_when_the_memory_changes():
    mem = ClassBalancedMemory(budget=12, selection="reservoir")
    g = torch.Generator().manual_seed(0)
    mem.update(_classes([0, 1]), generator=g)
    first = mem.dataset()
    assert mem.dataset() is first and len(first) == 12  # reused while nothing changed
    mem.update(_classes([2, 3]), generator=g)
    second = mem.dataset()
    assert second is not first and mem.counts() == {0: 3, 1: 3, 2: 3, 3: 3}
    assert second.y.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert torch.equal(second.x[:3], first.x[:3])  # class 0 shrunk to its first three
    mem.load_state_dict(mem.state_dict())
    assert mem.dataset() is not second and torch.equal(mem.dataset().x, second.x)


def test_batch_replay_draws_from_the_whole_memory_with_matching_labels():
    from types import SimpleNamespace

    from cfs.engine.batch import Batch
    from cfs_plugins.replay import Replay, ReplayOptions

    replay = Replay(ReplayOptions(budget=40, selection="reservoir", mode="batch"))
    # pixel value = 10 * label + index within its class, so a row's label can be read from it
    y = torch.arange(8).repeat_interleave(20)
    x = (10 * y + torch.arange(160) % 10).to(torch.uint8).view(-1, 1, 1, 1)
    replay.memory.update(ArrayDataset(x, y), generator=torch.Generator().manual_seed(1))
    state = SimpleNamespace(generator=torch.Generator().manual_seed(2),
                            prepare=lambda raw, train=False: raw.float())
    drawn = []
    for _ in range(50):
        state.batch = Batch(torch.zeros(16, 1, 1, 1), torch.zeros(16, dtype=torch.long))
        replay.cfs_before_batch(state)
        seg = state.batch.segment("replay")
        rows_x, rows_y = state.batch.x[seg.start:seg.stop], state.batch.y[seg.start:seg.stop]
        assert seg.stop - seg.start == 16 and state.batch.replayed[16:].all()
        assert torch.equal(rows_x.flatten().long() // 10, rows_y)  # every image with its own label
        drawn.append(rows_x.flatten())
    stored = set(replay.memory.dataset().x.flatten().tolist())
    assert set(torch.cat(drawn).long().tolist()) == stored  # 800 draws reach all 40 exemplars
