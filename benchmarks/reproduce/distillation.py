"""Ledger rows: every registered distillation loss of ``cfs distill`` vs the student trained
alone and vs plain KD, in the seed papers' own teacher-student setting (digits, ResNet-20
teacher, MLP student with 30 training images per class, so the teacher has something to add).

    python benchmarks/reproduce/distillation.py [--seeds 0,1,2] [--losses kd,clkd,nckd,trg,pckd]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import Row, write  # noqa: E402

PAPERS = {"kd": "Hinton et al. 2015", "clkd": "CLKD (METHODS.md 4)", "nckd": "NCKD (METHODS.md 5)",
          "trg": "TRG (METHODS.md 6)", "pckd": "PCKD (MuHeDing/PCKD; METHODS.md 7)"}
STUDENT = ["--student", "mlp", "--epochs", "5", "--train-per-class", "30"]


def cfs(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "cfs", *args], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), check=True)
    return done.stdout


def accuracies(out: str) -> tuple[float, float]:
    alone = float(re.search(r"student alone accuracy\s+([\d.]+)%", out).group(1)) / 100
    distilled = float(re.search(r"distilled accuracy\s+([\d.]+)%", out).group(1)) / 100
    return alone, distilled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--losses", default="kd,clkd,nckd,trg,pckd")
    ap.add_argument("--teacher", default="/tmp/cfs-ledger-teacher-resnet20.pt")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    losses = a.losses.split(",")
    if not Path(a.teacher).exists():
        cfs("distill", "--train-teacher", "--teacher-backbone", "resnet20", "--save", a.teacher, "--epochs", "8",
            "--seed", "0")
    alone: list[float] = []
    distilled: dict[str, list[float]] = {loss: [] for loss in losses}
    for seed in seeds:
        for loss in losses:
            a_acc, d_acc = accuracies(cfs("distill", "--teacher", a.teacher, *STUDENT, "--loss", loss,
                                          "--seed", str(seed)))
            distilled[loss].append(d_acc)
        alone.append(a_acc)  # the same student alone (same seed, same initialisation) for every loss
    for loss in losses:
        per_seed = {loss: distilled[loss], "student alone": alone}
        if loss != "kd" and "kd" in distilled:
            per_seed["kd"] = distilled["kd"]
        write(Row(id=f"distill-{loss}", claim=f"{loss} distillation improves the student over training alone",
                  source=PAPERS.get(loss, loss),
                  setting="digits, teacher ResNet-20 (8 epochs, ~98.7%), student MLP, 30 train images/class, "
                          "5 epochs, METHODS.md defaults of each loss",
                  command=f"cfs distill --teacher TEACHER {' '.join(STUDENT)} --loss {loss} --seed S "
                          f"(TEACHER: cfs distill --train-teacher --teacher-backbone resnet20 --epochs 8 --save ...)",
                  metric="test accuracy %", seeds=seeds, per_seed=per_seed,
                  expectation=(loss, "student alone", 1.0)))


if __name__ == "__main__":
    main()
