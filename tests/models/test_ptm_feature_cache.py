"""The feature cache returns exactly the direct forward's features and never serves stale ones."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from cfs.data.transforms import BatchTransform
from cfs.features import CHUNK, FeatureCache, compute_features


class Counting(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def _data(n: int = 300, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _transform(**kw) -> BatchTransform:
    return BatchTransform(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), **kw)


def test_cached_features_are_bitwise_the_direct_forward_and_computed_once():
    model, t, x = Counting(), _transform(), _data()
    model.train()  # the cache must use eval mode and then restore the mode
    cache = FeatureCache(disk=False, enabled=True)
    first = cache.features(model, t, x, torch.device("cpu"))
    assert model.training
    model.eval()
    with torch.no_grad():
        direct = torch.cat([model(t(x[i : i + CHUNK])) for i in range(0, len(x), CHUNK)])
    assert torch.equal(first, direct)
    calls = model.calls
    again = cache.features(model, t, x, torch.device("cpu"))
    assert model.calls == calls and again is first and cache.hits == 1


def test_every_key_part_invalidates():
    model, t, x = Counting(), _transform(), _data()
    cache = FeatureCache(disk=False, enabled=True)
    dev = torch.device("cpu")
    base = cache.features(model, t, x, dev)
    # weights change (one parameter, one step)
    with torch.no_grad():
        model.net[0].weight[0, 0, 0, 0] += 0.5
    changed = cache.features(model, t, x, dev)
    assert cache.misses == 2 and not torch.equal(changed, base)
    assert torch.equal(changed, compute_features(model, t, x, dev))
    # a BN statistic (a buffer) changes
    model.net[1].running_mean += 1.0
    cache.features(model, t, x, dev)
    assert cache.misses == 3
    # transform changes: normalisation, then resize
    cache.features(model, dataclasses.replace(t, std=(0.3, 0.3, 0.3)), x, dev)
    cache.features(model, dataclasses.replace(t, resize=12), x, dev)
    assert cache.misses == 5
    # data change: one pixel
    x2 = x.clone()
    x2[7, 1, 2, 3] ^= 1
    cache.features(model, t, x2, dev)
    assert cache.misses == 6
    # another backbone class with identical weights
    class Other(Counting):
        pass

    other = Other()
    other.load_state_dict(model.state_dict())
    cache.features(other, t, x, dev)
    assert cache.misses == 7
    # and the unchanged triple is still a hit
    cache.features(model, t, x, dev)
    assert cache.misses == 7


def test_disk_cache_survives_a_new_run_and_is_bitwise_equal(tmp_path):
    model, t, x = Counting(), _transform(), _data(50)
    first = FeatureCache(disk=True, enabled=True, folder=tmp_path).features(model, t, x, torch.device("cpu"))
    assert len(list(tmp_path.glob("*.pt"))) == 1
    calls = model.calls
    second_run = FeatureCache(disk=True, enabled=True, folder=tmp_path)
    loaded = second_run.features(model, t, x, torch.device("cpu"))
    assert model.calls == calls and second_run.hits == 1 and torch.equal(loaded, first)
    # a corrupt file is recomputed, not trusted
    next(tmp_path.glob("*.pt")).write_bytes(b"garbage")
    third = FeatureCache(disk=True, enabled=True, folder=tmp_path)
    assert torch.equal(third.features(model, t, x, torch.device("cpu")), first) and third.misses == 1


def test_disabled_cache_recomputes(monkeypatch):
    monkeypatch.setenv("CFS_FEATURE_CACHE", "off")
    model, t, x = Counting(), _transform(), _data(10)
    cache = FeatureCache()
    cache.features(model, t, x, torch.device("cpu"))
    cache.features(model, t, x, torch.device("cpu"))
    assert cache.misses == 2 and model.calls == 2
