"""ConTraCon vs fine-tuning of the same ViT on a small real split-CIFAR-10 subset (issue 13, CPU).

Split-CIFAR-10 (5 experiences x 2 classes, seed-1993 class order), the first ``--train`` train /
``--test`` test images of every class at 32 px, crop + flip. Both methods use the same backbone
(default ``vit-tiny-p8``, randomly initialised as in the paper, whose first task trains the
transformer from scratch; ``--weights`` loads a ``cfs pretrain`` checkpoint instead) and the same
optimizer (AdamW, lr 8e-4: the official ConTraCon setting). ConTraCon identifies the task of each
test image from ``--views`` AutoAugment views (official 10; fewer keeps the CPU run short).
Prints final accuracy (all 10 classes, task-agnostic) per method and seed, and mean +- std;
no ledger rows (a measurement, not a reproduction: the paper trains 250 epochs per task).

    python benchmarks/reproduce/contracon_cil.py --seeds 0,1 --train 100 --test 50 --epochs 3 --views 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "perf"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="/tmp/cifar10", help="folder holding cifar10-jpg/")
    ap.add_argument("--backbone", default="vit-tiny-p8")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--train", type=int, default=100)
    ap.add_argument("--test", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--kernel-size", type=int, default=15)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--methods", default="finetune,contracon")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    from _ptm_data import split_cifar10_subset
    from cfs.config import RunConfig
    from cfs.data.transforms import BatchTransform
    from cfs.engine.runner import run_strategy
    from cfs.evaluation.metrics import seen_accuracy
    from cfs.plugins import get_plugin_manager

    torch.set_num_threads(a.threads)
    pm = get_plugin_manager()
    scenario = split_cifar10_subset(a.data_root, a.train, a.test, 32)
    t = scenario.transform
    scenario.transform = BatchTransform(t.mean, t.std, crop_padding=4, flip=True, resize=t.resize)
    finals: dict[str, list[float]] = {}
    for method in a.methods.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            options = {"contracon": {"views": a.views, "kernel_size": a.kernel_size}} if method == "contracon" else {}
            cfg = RunConfig(backbone=a.backbone, weights=a.weights, device="cpu", seed=seed, epochs=a.epochs,
                            batch_size=32, optimizer="adamw", lr=8e-4, weight_decay=6e-7, schedule="cosine",
                            eval_seen_only=True, options=options)
            t0 = time.perf_counter()
            res = run_strategy(pm, cfg, method, scenario, progress=False).state.results
            acc = seen_accuracy(np.array(res.rows), np.array(res.test_sizes))
            finals.setdefault(method, []).append(100 * float(acc[-1]))
            diag = [100 * res.rows[i][i] for i in range(len(res.rows))]
            print(f"{method:10s} seed {seed}: final {100 * acc[-1]:5.1f}%  seen-accuracy per step "
                  + " ".join(f"{100 * v:.1f}" for v in acc) + "  just-trained task " + " ".join(f"{v:.1f}" for v in diag)
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    for method, vals in finals.items():
        print(f"{method:10s} final accuracy {np.mean(vals):.1f} +- {np.std(vals):.1f} over {len(vals)} seed(s)")


if __name__ == "__main__":
    main()
