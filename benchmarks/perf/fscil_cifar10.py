"""TEEN versus the prototype baseline on the fscil-cifar10 split (5 base classes, then five
1-way 5-shot sessions, seed 1993), printing the per-session table of each.

CPU-sized: the base session uses ``--base-images`` training images per class and every class
``--test`` test images (the few shots are drawn from the same per-class pool). Both strategies
train the same base model (same seed); they differ only in the novel prototypes.

    python benchmarks/perf/fscil_cifar10.py --data-root DIR [--base-images 150] [--epochs 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ptm_data import per_class  # noqa: E402

from cfs.config import RunConfig  # noqa: E402
from cfs.data import load_dataset  # noqa: E402
from cfs.data.arrays import DataSplit  # noqa: E402
from cfs.data.transforms import BatchTransform  # noqa: E402
from cfs.engine.runner import run_strategy  # noqa: E402
from cfs.evaluation.fscil import fscil_metrics, session_table  # noqa: E402
from cfs.plugins import get_plugin_manager  # noqa: E402
from cfs.scenarios.base import Scenario  # noqa: E402
from cfs.scenarios.fscil import build_sessions, generic_sessions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--base-images", type=int, default=150)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teen-alpha", type=float, default=0.5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    full = load_dataset("cifar10", root=a.data_root)
    data = DataSplit("cifar10", per_class(full.train, a.base_images), per_class(full.test, a.test), full.mean, full.std)
    order, exps = build_sessions(data, generic_sessions(data, base_classes=5, ways=1, shots=5, seed=1993))
    scenario = Scenario("fscil-cifar10-subset", "fscil", exps, order, [],
                        BatchTransform(mean=data.mean, std=data.std, crop_padding=4, flip=True), data.input_shape)
    print(f"{scenario.name}: base {len(exps[0].train)} images of {len(exps[0].classes)} classes, then "
          f"{len(exps) - 1} sessions of {len(exps[1].train)} images; {a.test} test images per class; "
          f"resnet20 + cosine head, {a.epochs} base epochs")
    pm = get_plugin_manager()
    for spec in ("protonet-fscil", "teen"):
        cfg = RunConfig(backbone="resnet20", head="cosine", device="cpu", seed=0, epochs=a.epochs, batch_size=64,
                        lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                        options={"teen": {"alpha": a.teen_alpha}} if spec == "teen" else {})
        res = run_strategy(pm, cfg, spec, scenario, progress=False).state.results
        print(session_table(fscil_metrics(np.array(res.rows), np.array(res.test_sizes)), spec), flush=True)


if __name__ == "__main__":
    main()
