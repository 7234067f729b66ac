"""SimpleCIL, APER, NCPTM-CIL and finetune with pretrained EfficientNet-Lite0 on real split-CIFAR10.

CPU-sized: a per-class subset of the images, resized to ``--size`` pixels (class order seed 1993,
5 experiences of 2 classes). Finetune trains the whole backbone with the same settings.

    python benchmarks/perf/ptm_split_cifar10.py --data-root DIR [--train 50] [--test 30] [--size 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ptm_data import split_cifar10_subset  # noqa: E402

from cfs.config import RunConfig  # noqa: E402
from cfs.engine.runner import run_strategy  # noqa: E402
from cfs.evaluation.metrics import seen_accuracy  # noqa: E402
from cfs.plugins import get_plugin_manager  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--train", type=int, default=50, help="training images per class")
    ap.add_argument("--test", type=int, default=30, help="test images per class")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--strategies", default="simplecil,aper,ncptm-cil,finetune")
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pm = get_plugin_manager()
    scenario = split_cifar10_subset(a.data_root, a.train, a.test, a.size)
    print(f"{scenario.name}: {sum(len(e.train) for e in scenario.experiences)} train / "
          f"{sum(len(e.test) for e in scenario.experiences)} test images, backbone efficientnet-lite0 (ImageNet)")
    for spec in a.strategies.split(","):
        cfg = RunConfig(backbone="efficientnet-lite0", device="cpu", seed=0, epochs=a.finetune_epochs,
                        batch_size=32, lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="cosine")
        t0 = time.perf_counter()
        res = run_strategy(pm, cfg, spec, scenario, progress=False).state.results
        acc = seen_accuracy(np.array(res.rows), np.array(res.test_sizes))
        print(f"  {spec:10s} final acc {100 * acc[-1]:5.1f} %   per step " + " ".join(f"{100 * v:.1f}" for v in acc)
              + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
