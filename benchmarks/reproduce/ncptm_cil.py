"""Ledger row: NCPTM-CIL vs SimpleCIL on split-CIFAR-10 with pre-trained EfficientNet-Lite0.

Runs ``benchmarks/perf/ptm_split_cifar10.py`` (or reads its ``--json`` output with
``--collect FILE``) and writes ``results/ncptm-cil-vs-simplecil.json``.

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
            "--strategies", "ncptm-cil,simplecil,ncptm-cil:pap=mean", "--seeds", a.seeds]
    path = Path(a.collect) if a.collect else Path("/tmp/ncptm-ledger.json")
    if not a.collect:
        subprocess.run([sys.executable, str(SCRIPT), *args, "--json", str(path)], check=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    report = json.loads(path.read_text())
    seeds = list(report["seeds"])
    per_seed: dict[str, list[float]] = {}
    for run in sorted(report["runs"], key=lambda r: r["seed"]):
        per_seed.setdefault(run["strategy"], []).append(run["seen_accuracy"][-1])
    write(Row(id="ncptm-cil-vs-simplecil",
              claim="NCPTM-CIL beats SimpleCIL (its paper's baseline) in class-incremental learning on a frozen "
                    "pre-trained model", source="NCPTM-CIL abstract; METHODS.md 1.2 revision",
              setting=f"split-CIFAR-10, EfficientNet-Lite0 ImageNet weights, 128 px, {report['train']} train / "
                      f"{report['test']} test images per class, pap=gaussian (pap=mean shown too)",
              command=f"python benchmarks/perf/ptm_split_cifar10.py {' '.join(args)}", metric="final accuracy %",
              seeds=seeds, per_seed=per_seed, expectation=("ncptm-cil", "simplecil", 3.0),
              notes=["the seed spread covers training randomness only, not the choice of test images"]))


if __name__ == "__main__":
    main()
