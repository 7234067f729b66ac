"""Ledger rows: ER-ACE and GDumb vs finetune on real split-CIFAR-10 (MLP), issue 10's claim.

Runs ``cfs bench`` once per seed (finetune, er-ace, gdumb at equal settings), or reads run
folders that exist (``--collect``), and writes ``results/er-ace-vs-finetune.json`` and
``results/gdumb-vs-finetune.json``.

    python benchmarks/reproduce/er_ace_gdumb.py --data-root /tmp/cifar10 [--seeds 0,1,2] [--out /tmp/erace]
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

ARGS = ["--scenario", "split-cifar10", "--strategy", "finetune", "--strategy", "er-ace", "--strategy", "gdumb",
        "--backbone", "mlp", "--epochs", "20", "--max-train-per-class", "1000", "--no-progress"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="/tmp/cifar10")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="/tmp/erace", help="run folders: OUT_s<seed>/<strategy>")
    ap.add_argument("--collect", action="store_true", help="read existing run folders instead of running")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    per_seed: dict[str, list[float]] = {"finetune": [], "er-ace": [], "gdumb": []}
    for seed in seeds:
        out = Path(f"{a.out}_s{seed}")
        if not a.collect:
            subprocess.run([sys.executable, "-m", "cfs", "bench", *ARGS, "--data-root", a.data_root,
                            "--seed", str(seed), "--out", str(out)], check=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
        for name in per_seed:
            per_seed[name].append(json.loads((out / name / "metrics.json").read_text())["summary"]["last_accuracy"])
    command = (f"cfs bench {' '.join(ARGS)} --data-root {a.data_root} --seed S --out {a.out}_sS  (S in {a.seeds})")
    setting = ("split-cifar10 (5x2 classes, seed-1993 order, JPEG CIFAR-10), MLP, 20 epochs, batch 128, SGD lr 0.1 "
               "cosine, 1000 train images/class, full test set, equal for all; images trained on: finetune 200k, "
               "ER-ACE ~405k (stream + replay), GDumb 50k (memory only)")
    for method, paper in (("er-ace", "Caccia et al., ICLR 2022"), ("gdumb", "Prabhu et al., ECCV 2020")):
        write(Row(id=f"{method}-vs-finetune", claim=f"{method} beats finetune's final accuracy by >= 15 points "
                  f"(issue 10; {paper} report far larger gaps)", source="issue 10", setting=setting,
                  command=command, metric="final accuracy %", seeds=seeds,
                  per_seed={method: per_seed[method], "finetune": per_seed["finetune"]},
                  expectation=(method, "finetune", 15.0)))


if __name__ == "__main__":
    main()
