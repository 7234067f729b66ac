"""Speed-up of the feature cache for a head-only method: epochs 2+ with cached features versus
recomputing the frozen backbone's features every epoch.

The head-only work per epoch is APER's: an adapter plus a linear head trained with CE on the
features (SGD, batch 48). "Recompute" embeds the images with the backbone (eval mode, no grad)
every epoch before the same head step; "cached" embeds them once (epoch 1, through
:class:`cfs.features.FeatureCache`) and then iterates over the stored features.

    python benchmarks/perf/feature_cache.py --data-root DIR [--images 500] [--size 128] [--epochs 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ptm_data import split_cifar10_subset  # noqa: E402

from cfs.features import FeatureCache, compute_features  # noqa: E402
from cfs.models.adapters import FeatureAdapter  # noqa: E402
from cfs.models.pretrained import efficientnet_lite  # noqa: E402


def head_epoch(adapter: nn.Module, head: nn.Module, opt: torch.optim.Optimizer, feats: torch.Tensor,
               y: torch.Tensor, g: torch.Generator) -> None:
    order = torch.randperm(len(y), generator=g)
    for s in range(0, len(y), 48):
        i = order[s : s + 48]
        loss = F.cross_entropy(head(adapter(feats[i])), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--images", type=int, default=50, help="training images per class")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    scenario = split_cifar10_subset(a.data_root, a.images, 1, a.size, experiences=1)
    data, t = scenario.experiences[0].train, scenario.transform
    backbone = efficientnet_lite("efficientnet-lite0", image_size=a.size)
    t = type(t)(mean=backbone.input_norm[0], std=backbone.input_norm[1], resize=a.size)
    dev = torch.device("cpu")
    times: dict[str, list[float]] = {}
    for mode in ("recompute", "cached"):
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        adapter, head = FeatureAdapter(backbone.out_dim), nn.Linear(backbone.out_dim, 10)
        opt = torch.optim.SGD(list(adapter.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
        cache = FeatureCache(disk=False, enabled=True)
        times[mode] = []
        for _ in range(a.epochs):
            t0 = time.perf_counter()
            feats = cache.features(backbone, t, data.x, dev) if mode == "cached" else compute_features(backbone, t, data.x, dev)
            head_epoch(adapter, head, opt, feats, data.y, g)
            times[mode].append(time.perf_counter() - t0)
    later = {m: sum(v[1:]) / len(v[1:]) for m, v in times.items()}
    print(f"EfficientNet-Lite0, {len(data)} CIFAR-10 images at {a.size}px, {a.threads} thread(s), CPU")
    for m, v in times.items():
        print(f"  {m:9s} epoch seconds: " + ", ".join(f"{x:.3f}" for x in v))
    print(f"  epochs 2+: recompute {later['recompute']:.3f} s, cached {later['cached']:.4f} s, "
          f"speed-up {later['recompute'] / later['cached']:.0f}x")


if __name__ == "__main__":
    main()
