"""Ledger rows: STN vs ProtoNet on the real Omniglot subset and mini-ImageNet val/test at a tiny
CPU budget (issue 11 item 5; the measurement is described in ``stn_fewshot.md``).

Per seed and data set, one ``cfs bench`` runs STN and ProtoNet on the same from-scratch tiny ViT
(``stn-vit-tiny``) and a second runs ProtoNet on its usual Conv-4; every run of a seed is tested
on the same seeded test episodes, so the rows' notes give paired per-episode differences.
``--collect`` reads the run folders instead of running. Writes
``results/stn-vs-protonet-vit-{omniglot,mini-imagenet}.json`` and
``results/stn-vs-protonet-conv4-{omniglot,mini-imagenet}.json`` (the last only when every seed's
Conv-4 run exists: it is the slowest run, about 7 CPU-minutes a seed at 84 px).

    mkdir -p /tmp/stn/data && tar xzf ../shared/data/omniglot-small.tar.gz -C /tmp/stn/data
    tar xzf ../shared/data/mini-imagenet-valtest.tar.gz -C /tmp/stn/data
    python benchmarks/reproduce/stn.py [--data /tmp/stn/data] [--seeds 0,1,2] [--out /tmp/stn/runs] [--skip-mini-conv4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from episodic_runs import episodic_metrics, paired  # noqa: E402
from rows import Row, write  # noqa: E402

COMMON = ["--meta-iterations", "100", "--meta-batch", "2", "--val-interval", "100", "--val-episodes", "20",
          "--test-episodes", "100", "--device", "cpu", "--no-progress"]
#: short name -> (scenario, folder under --data, description)
DATA = {"omniglot": ("omniglot-5w1s", "omniglot-small",
                     "Omniglot small background subsets (448/96/424 classes with rotations, test alphabets unseen), 28 px"),
        "mini": ("mini-imagenet-valtest-5w1s", "mini-imagenet",
                 "mini-ImageNet val/test only (meta-train on the 16 val classes, test on the 20 test classes, no "
                 "validation split), 84 px")}
BUDGET = ("5-way 1-shot 15 queries, 100 meta-iterations x 2 tasks, Adam 1e-3, from scratch (no pre-trained weights "
          "exist offline), 100 seeded test episodes, the same for every run of a seed")
GPU = ("cfs bench --scenario mini-imagenet-5w1s --data-root FULL_MINI_IMAGENET --strategy stn --strategy protonet "
       "--backbone timm:vit_small_patch16_224 --weights dino_deitsmall16_pretrain.pth --image-size 224 --optimizer adamw "
       "--lr 1e-5 --weight-decay 0.05 --schedule cosine --device cuda --seed S  (the STN paper's setting: DINO ViT-S/16, "
       "the 64 train classes; neither is available here)")


def commands(data: Path, name: str, seed: int | str, out: Path) -> dict[str, list[str]]:
    """The two ``cfs bench`` argument lists of one data set and seed (``"S"`` for the ledger's
    template), by run folder name."""
    scenario, folder, _ = DATA[name]
    base = ["--scenario", scenario, "--data-root", str(data / folder), *COMMON, "--seed", str(seed)]
    return {f"{name}-vit": [*base, "--strategy", "stn", "--strategy", "protonet", "--backbone", "stn-vit-tiny",
                            "--out", str(out / f"{name}-vit-s{seed}")],
            f"{name}-conv4": [*base, "--strategy", "protonet", "--backbone", "conv4",
                              "--out", str(out / f"{name}-conv4-s{seed}")]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/stn/data", help="folder holding omniglot-small/ and mini-imagenet/")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="/tmp/stn/runs", help="run folders: OUT/<data>-<backbone>-s<seed>")
    ap.add_argument("--collect", action="store_true", help="read existing run folders instead of running")
    ap.add_argument("--skip-mini-conv4", action="store_true", help="do not run ProtoNet-Conv-4 on mini-ImageNet")
    a = ap.parse_args()
    seeds, out, data = [int(s) for s in a.seeds.split(",")], Path(a.out), Path(a.data)
    if not a.collect:
        for seed in seeds:
            for name in DATA:
                for run, args in commands(data, name, seed, out).items():
                    if run == "mini-conv4" and a.skip_mini_conv4:
                        continue
                    subprocess.run([sys.executable, "-m", "cfs", "bench", *args], check=True,
                                   env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
    for name, (_, _, description) in DATA.items():
        command = "; ".join(f"cfs bench {' '.join(args)}" for args in commands(data, name, "S", out).values())
        command += f"  (S in {a.seeds}; OMP_NUM_THREADS=1)"
        vit = {s: out / f"{name}-vit-s{s}" for s in seeds}
        stn = {s: episodic_metrics(vit[s] / "stn") for s in seeds}
        proto = {s: episodic_metrics(vit[s] / "protonet") for s in seeds}
        conv4_runs = {s: out / f"{name}-conv4-s{s}" for s in seeds}
        missing = [s for s, p in conv4_runs.items() if not (p / "metrics.json").is_file()]
        rows = [("vit", "the same tiny ViT (stn-vit-tiny: 2 blocks, 64-d, 7x7 patches; STN has two such branches)", proto)]
        if missing:
            print(f"{name}: no ProtoNet-Conv-4 run for seeds {missing}; its row is not written", file=sys.stderr)
        else:
            rows.append(("conv4", "ProtoNet on its usual Conv-4 (64 ch), STN on the tiny ViT",
                         {s: episodic_metrics(p) for s, p in conv4_runs.items()}))
        full = "omniglot" if name == "omniglot" else "mini-imagenet"
        for backbone, which, against in rows:
            pair = paired("stn", "protonet", {s: (stn[s], against[s]) for s in seeds})
            write(Row(id=f"stn-vs-protonet-{backbone}-{full}",
                      claim="STN beats ProtoNet in 5-way 1-shot classification (by >= 2 points, about one seed's "
                            "95% interval over 100 test episodes)",
                      source="Jiang, Zhang & He, arXiv 2408.01427 (2024); issue 11 item 5",
                      setting=f"{description}; {which}; {BUDGET}; {pair.short()}",
                      command=command, metric="test accuracy %", seeds=seeds,
                      per_seed={"stn": [stn[s]["summary"]["accuracy"] for s in seeds],
                                "protonet": [against[s]["summary"]["accuracy"] for s in seeds]},
                      expectation=("stn", "protonet", 2.0), gpu_command=GPU,
                      notes=[pair.note(),
                             "smoke-scale: from-scratch tiny ViT, 200 training tasks; the paper's pre-trained DINO "
                             "ViT-S/16 and full training split are not available, so the paper's numbers are not tested",
                             "STN has two ViT branches (twice ProtoNet-ViT's parameters) and 2-3x its training time; "
                             "see benchmarks/reproduce/stn_fewshot.md"]))


if __name__ == "__main__":
    main()
