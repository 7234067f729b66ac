"""Decode and train on an ImageFolder larger than the memory the process may use.

The parent writes a synthetic ImageFolder (smooth class-coloured JPEGs with noise, 10 classes; a few hundred distinct images per class,
the rest hard links to them under other names)
whose decoded train pixels are ``--ratio`` times a memory cap, then starts a child process
that caps its own data memory with ``resource.setrlimit(RLIMIT_DATA, cap)`` and

1. decodes the folder (``load_dataset("imagefolder")``: parallel decode into the on-disk
   cache, sha256 of the pixel file), then
2. trains on it with ``cfs bench --scenario split-imagefolder --strategy finetune`` (an MLP,
   five experiences, one epoch over the first ``--train-per-class`` images of every class, a
   few steps per experience), which reads those rows of the decoded file in batches.

It prints the decoded size, the cap and the child's peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after each stage.

Why ``RLIMIT_DATA`` and not ``RLIMIT_AS``: importing torch maps several GB of address space
(shared libraries, reserved allocator arenas) that are never resident, so a cap on the address
space would stop torch from starting long before data matter. ``RLIMIT_DATA`` caps the
process's heap and private writable mappings: every tensor, NumPy array and malloc'd buffer,
which is where decoded images would have to live. Reading the decoded file goes through the
page cache (positioned reads), which the kernel can always reclaim and which is not the
process's memory.

Importing torch (a CUDA build) alone takes about 0.9 GB of ``RLIMIT_DATA`` (the writable
segments of its libraries, mostly never resident), so the cap must leave room above that:
2 GiB by default, of which about 1.1 GiB is what the data, the model and the batches may use.

Usage: ``python benchmarks/perf/larger_than_memory.py [--cap-mb 2048] [--ratio 3.2]``
(``--work /tmp/cfs-ltm``; the image folder is reused between runs, the cache is rebuilt).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CLASSES = 10
TEST_PER_CLASS = 20


def write_folder(root: Path, train_per_class: int, size: int, distinct: int = 400) -> None:
    """10 classes of JPEGs: a class colour and gradient plus per-image noise. ``distinct``
    images per class are encoded; the rest of each class are hard links to them under new
    names (every file is still decoded on its own; the folder costs little disk). Skipped when
    a folder with exactly these counts exists."""
    marker = root / f".complete-{train_per_class}-{size}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    from PIL import Image

    ramp = np.linspace(0, 1, size, dtype=np.float32)

    def one(job: tuple[str, int, int]) -> None:
        part, c, i = job
        rng = np.random.default_rng(hash((part, c, i)) % 2**32)
        colour = np.array([(c * 37) % 256, (c * 91) % 256, (c * 53) % 256], dtype=np.float32)
        img = colour * (0.5 + 0.5 * ramp[:, None, None] * (c % 2) + 0.5 * ramp[None, :, None] * (1 - c % 2))
        img = img + rng.normal(0, 24, (size, size, 3))
        folder = root / part / f"class{c}"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)

    jobs = []
    for part, n in (("train", train_per_class), ("test", TEST_PER_CLASS)):
        for c in range(CLASSES):
            (root / part / f"class{c}").mkdir(parents=True, exist_ok=True)
            jobs += [(part, c, i) for i in range(min(n, distinct))]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, jobs, chunksize=64))
    for c in range(CLASSES):
        folder = root / "train" / f"class{c}"
        for i in range(distinct, train_per_class):
            os.link(folder / f"{i % distinct:06d}.jpg", folder / f"{i:06d}.jpg")
    marker.touch()


def child(args: argparse.Namespace) -> None:
    """Runs in the capped process: decode, then train; prints one JSON line per stage."""
    cap = args.cap_mb << 20
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10  # noqa: E731  (KiB -> B)
    import torch

    from cfs.cli import main
    from cfs.data import load_dataset

    vm_data = next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith("VmData"))
    print(json.dumps({"stage": "start", "peak_rss": peak(), "vm_data": vm_data}), flush=True)

    t0 = time.perf_counter()
    data = load_dataset("imagefolder", root=args.images)
    seconds = time.perf_counter() - t0
    print(json.dumps({"stage": "decode", "seconds": seconds, "peak_rss": peak(),
                      "train_shape": list(data.train.x.shape), "on_disk": data.train.on_disk,
                      "decoded_bytes": data.train.x.numel() + data.test.x.numel(),
                      "test_in_memory": isinstance(data.test.x, torch.Tensor)}), flush=True)
    del data
    t0 = time.perf_counter()
    code = main(["bench", "--scenario", "split-imagefolder", "--data-root", str(args.images),
                 "--strategy", "finetune", "--backbone", "mlp", "--epochs", "1", "--batch-size", "64",
                 "--lr", "0.001", "--device", "cpu", "--no-progress", "--overwrite",
                 "--max-train-per-class", str(args.train_per_class),
                 "--out", str(args.work / "run")])
    seconds = time.perf_counter() - t0
    metrics = json.loads((args.work / "run" / "metrics.json").read_text()) if code == 0 else {}
    print(json.dumps({"stage": "train", "exit": code, "seconds": seconds, "peak_rss": peak(),
                      "final_accuracy": metrics.get("summary", {}).get("last_accuracy")}),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap-mb", type=int, default=2048, help="RLIMIT_DATA of the child (MiB)")
    parser.add_argument("--train-per-class", type=int, default=300, help="images per class trained on")
    parser.add_argument("--ratio", type=float, default=3.2, help="decoded train size / cap")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cfs-ltm"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.images = args.work / "images"
    if args.child:
        child(args)
        return

    row = 3 * args.size * args.size
    per_class = int(np.ceil(args.ratio * (args.cap_mb << 20) / row / CLASSES))
    t0 = time.perf_counter()
    write_folder(args.images, per_class, args.size)
    print(f"image folder: {CLASSES} classes x {per_class:,} train + {TEST_PER_CLASS} test JPEGs of "
          f"{args.size}x{args.size} in {args.images} ({time.perf_counter() - t0:.0f} s to write or reuse)")
    cache = args.work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # decode from scratch every time
    env = {**os.environ, "CFS_CACHE_DIR": str(cache)}
    env.pop("CFS_IN_MEMORY_MAX_BYTES", None)  # the child decides from its own cap
    cmd = [sys.executable, __file__, "--child", "--cap-mb", str(args.cap_mb), "--size", str(args.size),
           "--work", str(args.work), "--train-per-class", str(args.train_per_class)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    stages = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            info = json.loads(line)
            stages[info["stage"]] = info
    if out.returncode or "train" not in stages or stages["train"]["exit"] != 0:
        print(out.stdout[-3000:], out.stderr[-3000:], sep="\n")
        raise SystemExit(f"the capped child failed (exit {out.returncode})")
    mib = lambda b: b / 2**20  # noqa: E731
    d, t = stages["decode"], stages["train"]
    files = sum(f.stat().st_size for f in cache.iterdir())
    print(f"memory cap (RLIMIT_DATA of the child): {args.cap_mb:,} MiB, of which importing torch and cfs "
          f"took {mib(stages['start']['vm_data']):,.0f} MiB")
    print(f"decoded train+test pixels: {mib(d['decoded_bytes']):,.0f} MiB = "
          f"{d['decoded_bytes'] / (args.cap_mb << 20):.2f} x the cap (train {d['train_shape']}, "
          f"kept on disk: {d['on_disk']}; cache entry {mib(files):,.0f} MiB)")
    print(f"peak RSS of the child: {mib(stages['start']['peak_rss']):,.0f} MiB at start, "
          f"{mib(d['peak_rss']):,.0f} MiB after decoding ({d['seconds']:.0f} s), "
          f"{mib(t['peak_rss']):,.0f} MiB after training ({t['seconds']:.0f} s, 1 epoch on "
          f"{args.train_per_class} images per class, last accuracy {t['final_accuracy']})")


if __name__ == "__main__":
    main()
