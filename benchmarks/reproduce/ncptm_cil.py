"""Ledger rows: NCPTM-CIL vs APER vs SimpleCIL on split-CIFAR-10 with pre-trained EfficientNet-Lite0.

Runs ``benchmarks/perf/ptm_split_cifar10.py`` (or reads its ``--json`` output with
``--collect FILE``) and writes ``results/ncptm-cil-vs-simplecil.json``,
``results/ncptm-cil-vs-aper.json`` and ``results/aper-vs-simplecil.json``. Both adapted
methods use their defaults on this CNN: APER-BN (BatchNorm statistics re-estimated on the
first task, 20 passes) and NCPTM-CIL on the same BN-adapted features.

    python benchmarks/reproduce/ncptm_cil.py --data-root /tmp/cifar10/cifar10-jpg [--test 100] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import Row, write  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "perf" / "ptm_split_cifar10.py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="/tmp/cifar10/cifar10-jpg")
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--collect", help="the JSON a previous run of the script wrote")
    a = ap.parse_args()
    args = ["--data-root", a.data_root, "--train", str(a.train), "--test", str(a.test), "--size", "128",
            "--strategies", "ncptm-cil,aper,simplecil", "--seeds", a.seeds]
    path = Path(a.collect) if a.collect else Path("/tmp/ncptm-ledger.json")
    if not a.collect:
        subprocess.run([sys.executable, str(SCRIPT), *args, "--json", str(path)], check=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    report = json.loads(path.read_text())
    seeds = list(report["seeds"])
    per_seed: dict[str, list[float]] = {}
    task0: dict[str, list[float]] = {}
    for run in sorted(report["runs"], key=lambda r: r["seed"]):
        per_seed.setdefault(run["strategy"], []).append(run["seen_accuracy"][-1])
        task0.setdefault(run["strategy"], []).append(run["last_row"][0])
    setting = (f"split-CIFAR-10, EfficientNet-Lite0 ImageNet weights, 128 px, {report['train']} train / "
               f"{report['test']} test images per class; APER-BN and NCPTM-CIL (pap=gaussian) on BN-adapted features, "
               f"their defaults; the seed changes training randomness only (SimpleCIL is training-free)")
    t0 = "; ".join(f"{m} {100 * sum(v) / len(v):.1f}" for m, v in task0.items())
    notes = ["the seed spread covers training randomness only, not the choice of test images",
             f"first task's accuracy after the last task, mean over seeds: {t0}"]
    command = f"python benchmarks/perf/ptm_split_cifar10.py {' '.join(args)}"
    gpu = ("cfs bench --scenario split-cifar100 --backbone timm:vit_base_patch16_224 --pretrained --image-size 224 "
           "--strategy ncptm-cil --strategy aper --strategy simplecil --device cuda --seed S  (B0 Inc10, seed-1993 order)")
    for row_id, win, lose, claim, source, margin in (
            ("ncptm-cil-vs-simplecil", "ncptm-cil", "simplecil", "NCPTM-CIL beats SimpleCIL (its paper's baseline)",
             "NCPTM-CIL abstract; METHODS.md 1.2 revision", 1.0),
            ("ncptm-cil-vs-aper", "ncptm-cil", "aper", "NCPTM-CIL beats APER", "NCPTM-CIL abstract; METHODS.md 1.2", 1.0),
            ("aper-vs-simplecil", "aper", "simplecil", "APER beats SimpleCIL (adaptation on the first task helps)",
             "APER (Zhou et al., IJCV 2024)", 0.5)):
        write(Row(id=row_id, claim=f"{claim} in class-incremental learning on a frozen pre-trained model",
                  source=source, setting=setting, command=command, metric="final accuracy %", seeds=seeds,
                  per_seed={win: per_seed[win], lose: per_seed[lose]}, expectation=(win, lose, margin),
                  gpu_command=gpu, notes=notes))


if __name__ == "__main__":
    main()
