"""SimpleCIL, APER, NCPTM-CIL and finetune with pretrained EfficientNet-Lite0 on real split-CIFAR10.

CPU-sized: a per-class subset of the images, resized to ``--size`` pixels (class order seed 1993,
5 experiences of 2 classes). Finetune trains the whole backbone with the same settings.

    python benchmarks/perf/ptm_split_cifar10.py --data-root DIR [--train 50] [--test 30] [--size 128]
        [--strategies simplecil,ncptm-cil,ncptm-cil:pap=mean] [--seeds 0,1,2] [--json out.json]

A strategy may carry options after a colon, ``name:key=value;key=value`` (``ncptm-cil:pap=mean``,
values parsed as int, float, true/false or text); each is reported under that full label. With
several seeds (the run's seed: initialisation, shuffling, sampling; the image subset and the
class order stay fixed) it reports mean +- std of the final accuracy and of the first task's
accuracy after the last task. Set ``CFS_FEATURE_CACHE=disk`` to compute the backbone's features
once for all runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ptm_data import split_cifar10_subset  # noqa: E402

from cfs.config import RunConfig  # noqa: E402
from cfs.engine.runner import run_strategy  # noqa: E402
from cfs.evaluation.metrics import seen_accuracy  # noqa: E402
from cfs.plugins import get_plugin_manager  # noqa: E402


def parse_spec(label: str) -> tuple[str, dict[str, dict[str, object]]]:
    """``ncptm-cil:pap=mean;lam_pap=2`` -> ("ncptm-cil", {"ncptm-cil": {"pap": "mean", "lam_pap": 2}})."""
    spec, _, rest = label.partition(":")
    opts: dict[str, object] = {}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        opts[key.strip()] = _value(value.strip())
    return spec, ({spec.split("+")[0]: opts} if opts else {})


def _value(text: str) -> object:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--train", type=int, default=50, help="training images per class")
    ap.add_argument("--test", type=int, default=30, help="test images per class")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--strategies", default="simplecil,aper,ncptm-cil,finetune")
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", default="0", help="comma-separated run seeds")
    ap.add_argument("--json", help="write every run's per-step accuracies and the summaries here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pm = get_plugin_manager()
    scenario = split_cifar10_subset(a.data_root, a.train, a.test, a.size)
    print(f"{scenario.name}: {sum(len(e.train) for e in scenario.experiences)} train / "
          f"{sum(len(e.test) for e in scenario.experiences)} test images, backbone efficientnet-lite0 (ImageNet)")
    seeds = [int(s) for s in a.seeds.split(",")]
    report: dict[str, object] = {"scenario": scenario.name, "train": a.train, "test": a.test, "size": a.size,
                                 "seeds": seeds, "runs": [], "summary": {}}
    for label in a.strategies.split(","):
        spec, options = parse_spec(label)
        finals, firsts = [], []
        for seed in seeds:
            cfg = RunConfig(backbone="efficientnet-lite0", device="cpu", seed=seed, epochs=a.finetune_epochs,
                            batch_size=32, lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                            options=options)
            t0 = time.perf_counter()
            res = run_strategy(pm, cfg, spec, scenario, progress=False).state.results
            acc = seen_accuracy(np.array(res.rows), np.array(res.test_sizes))
            first = float(res.rows[-1][0])  # the first task's accuracy after the last task
            finals.append(float(acc[-1]))
            firsts.append(first)
            secs = time.perf_counter() - t0
            report["runs"].append({"strategy": label, "seed": seed, "seen_accuracy": [float(v) for v in acc],
                                   "last_row": [float(v) for v in res.rows[-1]], "seconds": secs})
            print(f"  {label:22s} seed {seed} final acc {100 * acc[-1]:5.1f} %   task-0 after last "
                  f"{100 * first:5.1f} %   per step " + " ".join(f"{100 * v:.1f}" for v in acc)
                  + f"   ({secs:.0f} s)", flush=True)
        f, t = 100 * np.array(finals), 100 * np.array(firsts)
        sd = (lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0)
        report["summary"][label] = {"final_mean": float(f.mean()), "final_std": sd(f),
                                    "task0_mean": float(t.mean()), "task0_std": sd(t)}
        print(f"  {label:22s} {len(seeds)} seed(s): final {f.mean():.1f} +- {sd(f):.1f} %   "
              f"task-0 after last {t.mean():.1f} +- {sd(t):.1f} %", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
