"""Ledger rows: NCPTM-CIL vs APER vs SimpleCIL through the ImageFolder path (Tiny-ImageNet style).

No Tiny-ImageNet files exist offline, so this builds a folder of the same shape from the 20
mini-ImageNet *test* classes (``/work/shared/data/mini-imagenet-valtest.tar.gz``): images resized
to 64 x 64 px (Tiny-ImageNet's size), ``train/<wnid>/`` with the first ``--train`` images of each
class and ``test/<wnid>/`` with the next ``--test``, then runs ``cfs bench --scenario
split-imagefolder`` (5 experiences x 4 classes, seed-1993 order) with pre-trained
EfficientNet-Lite0 decoding at ``--image-size`` for every seed, and writes three rows:
``ptm-imagefolder-ncptm-vs-simplecil``, ``ptm-imagefolder-ncptm-vs-aper`` and
``ptm-imagefolder-aper-vs-simplecil``.

    python benchmarks/reproduce/ptm_imagefolder.py [--tar PATH] [--folder /tmp/mini64] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import Row, write  # noqa: E402

STRATEGIES = ("ncptm-cil", "aper", "simplecil")


def build_folder(tar_path: Path, folder: Path, n_train: int, n_test: int, size: int = 64) -> None:
    """Write ``folder/{train,test}/<wnid>/*.jpg`` at ``size`` px from the archive's test split."""
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return
    with tarfile.open(tar_path) as tar:
        rows = list(csv.DictReader(io.TextIOWrapper(tar.extractfile("mini-imagenet/test.csv"), "utf-8")))
        by_class: dict[str, list[str]] = {}
        for r in rows:
            by_class.setdefault(r["label"], []).append(r["filename"])
        for wnid, files in sorted(by_class.items()):
            for split, names in (("train", files[:n_train]), ("test", files[n_train : n_train + n_test])):
                out = folder / split / wnid
                out.mkdir(parents=True, exist_ok=True)
                for name in names:
                    img = Image.open(tar.extractfile(f"mini-imagenet/images/{name}")).convert("RGB")
                    img.resize((size, size), Image.BICUBIC).save(out / name, quality=95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tar", default="/work/shared/data/mini-imagenet-valtest.tar.gz")
    ap.add_argument("--folder", default="/tmp/mini64")
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--out", default="/tmp/ptm-imagefolder", help="run folders: OUT_s<seed>/<strategy>")
    ap.add_argument("--collect", action="store_true", help="read existing run folders instead of running")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    args = ["--scenario", "split-imagefolder", "--data-root", a.folder, "--backbone", "efficientnet-lite0",
            "--pretrained", "--image-size", str(a.image_size), *[x for s in STRATEGIES for x in ("--strategy", s)],
            "--no-progress"]
    if not a.collect:
        build_folder(Path(a.tar), Path(a.folder), a.train, a.test)
    per_seed: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    for seed in seeds:
        out = Path(f"{a.out}_s{seed}")
        if not a.collect:
            subprocess.run([sys.executable, "-m", "cfs", "bench", *args, "--seed", str(seed), "--out", str(out)],
                           check=True, env=dict(os.environ, OMP_NUM_THREADS=a.threads, CFS_FEATURE_CACHE="disk"))
        for name in per_seed:
            per_seed[name].append(json.loads((out / name / "metrics.json").read_text())["summary"]["last_accuracy"])
    command = (f"python benchmarks/reproduce/ptm_imagefolder.py --train {a.train} --test {a.test}  (builds {a.folder}, "
               f"then: cfs bench {' '.join(args)} --seed S --out {a.out}_sS, S in {a.seeds})")
    setting = (f"split-imagefolder (5 experiences x 4 classes, seed-1993 order) over a 64 px folder built from the 20 "
               f"mini-ImageNet test classes ({a.train} train / {a.test} test images per class), decoded at "
               f"{a.image_size} px, EfficientNet-Lite0 ImageNet weights frozen; APER-BN and NCPTM-CIL on BN-adapted "
               f"features (defaults); the seed changes training randomness only (SimpleCIL is training-free)")
    gpu = ("cfs bench --scenario split-imagefolder --data-root TINY_IMAGENET_FOLDER --backbone timm:vit_base_patch16_224 "
           "--pretrained --image-size 224 --strategy ncptm-cil --strategy aper --strategy simplecil --device cuda --seed S")
    source = "NCPTM-CIL abstract; METHODS.md 1.2; APER (Zhou et al., IJCV 2024)"
    for row_id, win, lose, claim in (
            ("ptm-imagefolder-ncptm-vs-simplecil", "ncptm-cil", "simplecil", "NCPTM-CIL beats SimpleCIL"),
            ("ptm-imagefolder-ncptm-vs-aper", "ncptm-cil", "aper", "NCPTM-CIL beats APER"),
            ("ptm-imagefolder-aper-vs-simplecil", "aper", "simplecil", "APER beats SimpleCIL")):
        write(Row(id=row_id, claim=f"{claim} on a frozen pre-trained model (Tiny-ImageNet-style ImageFolder path)",
                  source=source, setting=setting, command=command, metric="final accuracy %", seeds=seeds,
                  per_seed={win: per_seed[win], lose: per_seed[lose]}, expectation=(win, lose, 1.0), gpu_command=gpu))


if __name__ == "__main__":
    main()
