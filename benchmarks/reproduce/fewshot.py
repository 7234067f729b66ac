"""Ledger rows: GP-MAML vs MAML at equal settings, and MAML and ProtoNet vs their published
Omniglot 5-way 1-shot numbers, on the real Omniglot subset at a CPU budget.

One ``cfs bench`` per seed runs MAML, GP-MAML and ProtoNet on the same scenario, meta-batch,
meta-iterations, backbone and seed, so all three are tested on the same seeded test episodes;
``--collect`` reads the run folders instead of running. Writes
``results/gp-maml-vs-maml-omniglot.json`` (paired per episode, see ``episodic_runs.py``),
``results/maml-omniglot-vs-paper.json`` and ``results/protonet-omniglot-vs-paper.json``.

    mkdir -p /tmp/fewshot/data && tar xzf ../shared/data/omniglot-small.tar.gz -C /tmp/fewshot/data
    python benchmarks/reproduce/fewshot.py --data-root /tmp/fewshot/data [--seeds 0,1,2] [--out /tmp/fewshot/runs/omniglot]

Measured here with ``OMP_NUM_THREADS=2``: about 4 minutes a seed on a shared 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from episodic_runs import Paired, episodic_metrics, paired  # noqa: E402
from rows import Reference, Row, write  # noqa: E402

ITERATIONS, META_BATCH, TEST_EPISODES = 40, 4, 200
#: equal for MAML and GP-MAML: one inner step of 0.4 (MAML's Omniglot value; GP-MAML's code uses
#: 0.5), second order (both papers), 3 test-time steps (MAML's Omniglot protocol); GP-MAML's psi
#: scale is the stable "positive" form because Conv-4 leaves a 1x1 map at 28 px
INNER = ["-o", "maml.inner_lr=0.4", "-o", "gp-maml.inner_lr=0.4", "-o", "maml.test_inner_steps=3",
         "-o", "gp-maml.test_inner_steps=3", "-o", "gp-maml.sigma=positive"]
ARGS = ["--scenario", "omniglot-5w1s", "--strategy", "maml", "--strategy", "gp-maml", "--strategy", "protonet",
        "--backbone", "conv4", "--meta-iterations", str(ITERATIONS), "--meta-batch", str(META_BATCH),
        "--val-interval", str(ITERATIONS), "--val-episodes", "20", "--test-episodes", str(TEST_EPISODES),
        *INNER, "--device", "cpu", "--no-progress"]

SETTING = (f"Omniglot small background subsets (../shared/data/omniglot-small: 112 train / 24 val (Greek) / 106 test "
           f"characters of unseen alphabets, x4 rotations as classes = 448/96/424; the paper's split has 4800 train "
           f"classes), 28 px, Conv-4 64 ch from scratch, 5-way 1-shot 15 queries, {ITERATIONS} meta-iterations x "
           f"{META_BATCH} tasks (the papers: 60000 x 32), Adam 1e-3, one validation at the end (no model selection), "
           f"{TEST_EPISODES} seeded test episodes, the same for all methods of a seed; MAML and GP-MAML: 1 inner step of "
           f"0.4, second order, 3 test steps; ProtoNet: the same episodes and meta-batch")
GPU_MAML = ("cfs bench --scenario omniglot-5w1s --data-root FULL_OMNIGLOT --strategy maml --strategy gp-maml "
            "--meta-iterations 60000 --meta-batch 32 --val-interval 500 --test-episodes 600 "
            f"{' '.join(INNER)} --device cuda --seed S  (FULL_OMNIGLOT: images_background + images_evaluation, "
            "the MAML paper's protocol for both methods)")
GPU_PROTO = ("cfs bench --scenario omniglot-5w1s --data-root FULL_OMNIGLOT --strategy protonet --train-n-way 60 "
             "--meta-batch 1 --meta-iterations 20000 --val-interval 500 --test-episodes 1000 --device cuda --seed S  "
             "(Snell et al.: 60-way training episodes, Adam 1e-3 halved every 2000 episodes, trained until validation "
             "loss stops improving)")


def significance(pair: Paired) -> str:
    """What the pooled paired difference does and does not show, from its 95% interval."""
    if abs(pair.mean) <= pair.ci95:
        return (f"the paired difference ({pair.mean:+.2f} +- {pair.ci95:.2f}, 95% CI) includes 0: at this budget "
                f"GP-MAML is not worse than MAML, and not shown better; both models are barely meta-trained (about "
                f"40% at 20% chance), where GP-MAML's pseudo-labels, propagated over a weak model's features, "
                f"cannot add much; Conv-4 at 28 px also leaves a 1x1 map for the relation network psi")
    better = "ahead of" if pair.mean > 0 else "behind"
    return (f"GP-MAML is {better} MAML by more than the paired 95% interval ({pair.mean:+.2f} +- {pair.ci95:.2f}); "
            f"both models are only briefly meta-trained, so this says little about the papers' budget")


def run_folder(out: str, seed: int) -> Path:
    return Path(f"{out}_s{seed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="/tmp/fewshot/data", help="folder holding omniglot-small/")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="/tmp/fewshot/runs/omniglot", help="run folders: OUT_s<seed>/<strategy>")
    ap.add_argument("--collect", action="store_true", help="read existing run folders instead of running")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    for seed in seeds:
        if not a.collect:
            subprocess.run([sys.executable, "-m", "cfs", "bench", *ARGS, "--data-root", a.data_root,
                            "--seed", str(seed), "--out", str(run_folder(a.out, seed))], check=True,
                           env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
    metrics = {seed: {m: episodic_metrics(run_folder(a.out, seed) / m) for m in ("maml", "gp-maml", "protonet")}
               for seed in seeds}
    per_seed = {m: [metrics[s][m]["summary"]["accuracy"] for s in seeds] for m in ("maml", "gp-maml", "protonet")}
    seconds = {m: sum(metrics[s][m]["time"]["total_seconds"] for s in seeds) / len(seeds) for m in per_seed}
    cost = "; ".join(f"{m} {t:.0f} s" for m, t in seconds.items())
    command = (f"cfs bench {' '.join(ARGS)} --data-root {a.data_root} --seed S --out {a.out}_sS  (S in {a.seeds}; "
               f"OMP_NUM_THREADS=2)")
    pair = paired("gp-maml", "maml", {s: (metrics[s]["gp-maml"], metrics[s]["maml"]) for s in seeds})
    val = {m: ", ".join(f"{100 * metrics[s][m]['val_curve'][-1]['accuracy']:.1f}" for s in seeds)
           for m in ("gp-maml", "maml")}
    write(Row(id="gp-maml-vs-maml-omniglot", claim="GP-MAML >= MAML on Omniglot 5-way 1-shot at equal settings",
              source="Liu et al. 2022 (arXiv 2207.04217), code branpent/gp-maml; issue 11",
              setting=f"{SETTING}; {pair.short()}", command=command, metric="test accuracy %", seeds=seeds,
              per_seed={"gp-maml": per_seed["gp-maml"], "maml": per_seed["maml"]},
              # 2 points (about one seed's 95% interval at 200 episodes, as the STN rows): a lead
              # inside the noise is "direction reproduced", not "reproduced"
              expectation=("gp-maml", "maml", 2.0), gpu_command=GPU_MAML,
              notes=[pair.note(),
                     f"mean wall time per seed on a shared 2-core CPU (train + validation + test): {cost}",
                     f"validation accuracy at the end (20 episodes), per seed: GP-MAML {val['gp-maml']}; "
                     f"MAML {val['maml']}",
                     significance(pair),
                     "the last comparison (issue 5's closing note: 500 x 4 tasks, seed 0, 600 episodes, not every "
                     "setting equal: GP-MAML's inner_lr defaults to 0.5, MAML's to 0.4) found GP-MAML 9.7 points "
                     "behind (80.85 vs 90.50); this row holds every setting equal, at a smaller budget",
                     "the paper's own numbers for GP-MAML could not be retrieved (METHODS.md 2.3); the claim "
                     "checked is only that it is not worse than MAML at equal settings"]))
    scaled = (f"scaled protocol: 242 of Omniglot's 1623 characters, {ITERATIONS} x {META_BATCH} training tasks "
              f"instead of 60000 x 32, {TEST_EPISODES} test episodes; the published number is not expected at "
              f"this budget (a longer single-seed MAML run, 1500 x 4 tasks, reached 93.5% in issue 5's measurement)")
    for method, value, pm, source in (
            ("maml", 98.7, 0.4, "Finn et al., ICML 2017, Table 1 (Omniglot 5-way 1-shot)"),
            ("protonet", 98.8, None, "Snell et al., NeurIPS 2017, Table 1 (Omniglot 5-way 1-shot)")):
        write(Row(id=f"{method}-omniglot-vs-paper",
                  claim=f"{method} reaches its published Omniglot 5-way 1-shot accuracy", source=source,
                  setting=SETTING, command=command, metric="test accuracy %", seeds=seeds,
                  per_seed={method: per_seed[method]},
                  reference=Reference(method, value, 2.0, source, pm),
                  gpu_command=GPU_MAML if method == "maml" else GPU_PROTO,
                  notes=[scaled, "the same runs as gp-maml-vs-maml-omniglot (same seeds and test episodes)"]))


if __name__ == "__main__":
    main()
