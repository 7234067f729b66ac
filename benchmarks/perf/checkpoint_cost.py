"""What do checkpoints cost? The same runs with and without a checkpointer, alternating in one
process; medians and the ratio. Target at default settings: <= 1.03.

Default settings: a checkpoint at every experience boundary unless the last one is younger
than 5 s, and every 10 minutes. The default job (split-digits, MLP, 10 epochs, about a second)
is the worst case for per-checkpoint cost: ``--min-seconds 0`` forces a checkpoint at every
boundary to show what each write costs (model, optimizer, strategy memories, every RNG, fsync).

    OMP_NUM_THREADS=1 python benchmarks/perf/checkpoint_cost.py [--repeats 7] [--min-seconds 0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cfs.config import resolve
from cfs.engine.checkpoint import Checkpointer, CheckpointPolicy
from cfs.engine.runner import run_strategy
from cfs.plugins import get_plugin_manager


def one(pm, cfg, spec: str, scenario, checkpoints: bool) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Checkpointer(Path(tmp) / "checkpoints", CheckpointPolicy(cfg.checkpoint_epochs, cfg.checkpoint_minutes,
                                                                            cfg.checkpoint_min_seconds))
        t0 = time.perf_counter()
        run_strategy(pm, cfg, spec, scenario, progress=False, checkpointer=ckpt if checkpoints else None)
        ckpt.wait()  # the last checkpoint is on disk
        return time.perf_counter() - t0, ckpt.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--strategies", default="finetune,replay,derpp")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="checkpoint_min_seconds (default: the config's, 5; 0 writes at every boundary)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pm = get_plugin_manager()
    factory = pm.scenarios.get("split-digits")
    cfg = resolve(factory.defaults, {"device": "cpu", "checkpoint_min_seconds": args.min_seconds})
    scenario = factory(cfg)
    for spec in args.strategies.split(","):
        one(pm, cfg, spec, scenario, True)  # warm-up
        plain, with_ckpt, count = [], [], 0
        for _ in range(args.repeats):
            plain.append(one(pm, cfg, spec, scenario, False)[0])
            seconds, count = one(pm, cfg, spec, scenario, True)
            with_ckpt.append(seconds)
        a, b = statistics.median(plain), statistics.median(with_ckpt)
        print(f"{spec:10s} no checkpoints {a:.3f}s  with {count} checkpoints {b:.3f}s  ratio {b / a:.3f} "
              f"(medians of {args.repeats})")


if __name__ == "__main__":
    main()
