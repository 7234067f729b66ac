"""Curriculum Designer benchmark: the designed class order vs random orders for online ER on
real split-CIFAR-10 (issue 14, item 4; Singh et al., ICCV 2023).

1. ``--class-order curriculum`` with run seed 0 designs the order (first-pass MLP features,
   :mod:`cfs.scenarios.curriculum`); it is written to ``OUT/designed.txt`` and reused with
   ``file:`` for the other run seeds, so one designed order is compared.
2. ``--orders`` random orders (``--class-order-seed 1..R``) and the designed order each run
   online ER (``online-split-cifar10``) with the same run seeds.
3. The orders are ranked by final accuracy and by average anytime accuracy (mean over run
   seeds); the designer's score of every order and its rank correlation with the measured
   accuracy are reported.

Writes ``results/curriculum-designer-vs-random-orders.json`` (a ledger row: designed order vs
the mean of the random orders, per run seed) and ``results/extra/curriculum.json`` (every
order, its score and its accuracies; the ledger reads only ``results/*.json``).

    python benchmarks/reproduce/curriculum.py --data-root /tmp/cifar10 [--orders 8] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import RESULTS, Row, write  # noqa: E402

from cfs.scenarios.curriculum import curriculum_score  # noqa: E402

BASE = ["--scenario", "online-split-cifar10", "--strategy", "er", "--max-train-per-class", "2000", "--no-progress"]


def run(args: list[str], out: Path, data_root: str, seed: int, collect: bool) -> dict:
    if not collect and not (out / "metrics.json").is_file():  # a finished run folder is reused
        subprocess.run([sys.executable, "-m", "cfs", "bench", *BASE, *args, "--data-root", data_root, "--seed",
                        str(seed), "--out", str(out), "--overwrite"], check=True,
                       env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
    metrics = json.loads((out / "metrics.json").read_text())
    info = json.loads((out / "run.json").read_text())
    return {"final": metrics["online"]["final_accuracy"], "anytime": metrics["online"]["average_anytime_accuracy"],
            "order": info["scenario"]["class_order"], "source": info["scenario"].get("class_order_from", {})}


def rank(value: float, others: list[float]) -> int:
    """1-based rank of ``value`` among ``others`` and itself, higher is better."""
    return 1 + sum(o > value for o in others)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="/tmp/cifar10")
    ap.add_argument("--orders", type=int, default=8, help="random class orders (class-order seeds 1..R)")
    ap.add_argument("--seeds", default="0,1", help="run seeds, the same for every order")
    ap.add_argument("--out", default="/tmp/curriculum")
    ap.add_argument("--collect", action="store_true", help="read existing run folders instead of running "
                    "(without it, finished run folders under --out are reused and the others run)")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    designed_runs = [run(["--class-order", "curriculum"], root / f"designed_s{seeds[0]}", a.data_root, seeds[0],
                         a.collect)]
    distances = np.array(designed_runs[0]["source"]["distances"])
    designed = designed_runs[0]["order"]
    (root / "designed.txt").write_text(" ".join(map(str, designed)) + "\n")
    for seed in seeds[1:]:
        designed_runs.append(run(["--class-order", f"file:{root / 'designed.txt'}"], root / f"designed_s{seed}",
                                 a.data_root, seed, a.collect))
    orders = {"designed": {"order": designed, "runs": designed_runs}}
    for r in range(1, a.orders + 1):
        runs = [run(["--class-order-seed", str(r)], root / f"random{r}_s{seed}", a.data_root, seed, a.collect)
                for seed in seeds]
        orders[f"random seed {r}"] = {"order": runs[0]["order"], "runs": runs}
    table = {}
    for name, o in orders.items():
        table[name] = {"order": o["order"], "designer_score": curriculum_score(o["order"], distances),
                       "final": [x["final"] for x in o["runs"]], "anytime": [x["anytime"] for x in o["runs"]]}
        table[name]["mean_final"] = statistics.mean(table[name]["final"])
        table[name]["mean_anytime"] = statistics.mean(table[name]["anytime"])
    others = [v for k, v in table.items() if k != "designed"]
    d = table["designed"]
    rank_final = rank(d["mean_final"], [o["mean_final"] for o in others])
    rank_anytime = rank(d["mean_anytime"], [o["mean_anytime"] for o in others])
    scores = [v["designer_score"] for v in table.values()]
    rho_final = float(spearmanr(scores, [v["mean_final"] for v in table.values()]).statistic)
    rho_anytime = float(spearmanr(scores, [v["mean_anytime"] for v in table.values()]).statistic)
    n = len(table)
    summary = (f"designed order ranks {rank_final}/{n} by final accuracy and {rank_anytime}/{n} by average anytime "
               f"accuracy among itself and {len(others)} random orders (mean over run seeds {a.seeds}); Spearman "
               f"correlation of the designer's score with the measured accuracy over all {n} orders: "
               f"{rho_final:+.2f} (final), {rho_anytime:+.2f} (anytime)")
    extra = RESULTS / "extra"
    extra.mkdir(parents=True, exist_ok=True)
    (extra / "curriculum.json").write_text(json.dumps({"summary": summary, "seeds": seeds, "orders": table,
                                                       "distances": distances.tolist()}, indent=1) + "\n")
    per_seed_random = [statistics.mean(o["final"][i] for o in others) for i in range(len(seeds))]
    command = (f"python benchmarks/reproduce/curriculum.py --data-root {a.data_root} --orders {a.orders} "
               f"--seeds {a.seeds} --out {a.out}")
    write(Row(id="curriculum-designer-vs-random-orders",
              claim="the Curriculum Designer's order ranks among the better class orders for online ER "
                    "(Singh et al., ICCV 2023)", source="Singh et al., ICCV 2023; issue 14",
              setting=("online-split-cifar10 (5 tasks x 2 classes, first 2000 training images per class, one pass, "
                       "batch 10), online ER (buffer 500), MLP, "
                       "SGD lr 0.1; designed order from first-pass MLP features (one epoch on 200 images/class) vs "
                       f"{len(others)} random orders (class-order seeds 1..{a.orders}), same run seeds"),
              command=command, metric="final accuracy %", seeds=seeds,
              per_seed={"designed": d["final"], "random orders (mean)": per_seed_random},
              expectation=("designed", "random orders (mean)", 0.0),
              notes=[summary, f"designed order (CIFAR-10 class ids): {designed}",
                     "every order's accuracies and designer score: results/extra/curriculum.json"]))
    print(summary)


if __name__ == "__main__":
    main()
