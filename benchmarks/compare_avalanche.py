"""cfs against Avalanche (avalanche-lib 0.6.0, ``pip install cfs[avalanche]``) on the same real
split-CIFAR-10 experiment, side by side in one process: Naive/finetune, Replay, LwF, EWC, iCaRL.

    python benchmarks/compare_avalanche.py [--train-per-class 100 --epochs 3 ...]

Same images, class order (seed 1993), backbone (cfs's resnet32 module for both), epochs,
batch size, SGD settings, augmentation (random crop 4 + flip) and memory size. Avalanche trains
with its own strategies, data loaders and per-sample torchvision transforms; its models get
Avalanche's growing ``IncrementalClassifier`` (iCaRL: a 10-way linear layer, as Avalanche's
iCaRL requires). Accuracy is measured by the same code for both (all seen classes, after the
last experience; iCaRL by each library's nearest-mean classifier). Time is training time
(Fisher and exemplar selection included), evaluation excluded; with ``--repeats N`` the two
libraries alternate who runs first and the times are medians. cfs trains convolutional models
on the CPU in channels-last memory format (``memory_format: auto``), which is where most of
its speed-up on this experiment comes from; Avalanche uses PyTorch's default layout.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn

from cl_setup import add_arguments, cfs_config, load_setting, run_cfs, scenario, summary, table
from cfs.models.backbones import mlp, reduced_resnet18, resnet32

BACKBONES = {"resnet32": resnet32, "reduced-resnet18": reduced_resnet18, "mlp": lambda: mlp(3, 32)}


class TensorImages(torch.utils.data.Dataset):
    """uint8 images and labels with ``targets`` (what Avalanche's generators read)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform) -> None:
        self.x, self.targets, self.transform = x, y.tolist(), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), self.targets[i]


def avalanche_stream(setting, sc):
    from avalanche.benchmarks import nc_benchmark
    from torchvision.transforms import v2

    norm = v2.Normalize(setting.data.mean, setting.data.std)
    to_float = v2.ToDtype(torch.float32, scale=True)
    train_tf = v2.Compose([to_float, v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), norm])
    test_tf = v2.Compose([to_float, norm])
    ident = lambda x: x  # noqa: E731  (the transforms are applied inside TensorImages)
    d = setting.data
    bench = nc_benchmark(TensorImages(d.train.x, d.train.y, train_tf), TensorImages(d.test.x, d.test.y, test_tf),
                         n_experiences=len(sc.experiences), task_labels=False, fixed_class_order=sc.class_order,
                         class_ids_from_zero_from_first_exp=True, train_transform=ident, eval_transform=ident)
    return bench, test_tf


@torch.no_grad()
def accuracy_row(model: nn.Module, sc, test_tf, n_seen: int) -> list[float]:
    model.eval()
    row = []
    for e in sc.experiences:
        x = test_tf(e.test.x)
        scores = torch.cat([model(x[i : i + 500]) for i in range(0, len(x), 500)])[:, :n_seen]
        row.append(float((scores.argmax(1) == e.test.y).float().mean()))
    model.train()
    return row


def run_avalanche(setting, name: str) -> dict:
    from avalanche.models import IncrementalClassifier
    from avalanche.training import EWC, ICaRL, LwF, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

    a = setting.args
    torch.manual_seed(a.seed)
    cfg = cfs_config(setting, "finetune")
    sc = scenario(setting, cfg)
    bench, test_tf = avalanche_stream(setting, sc)
    backbone = BACKBONES[a.backbone]()
    common = dict(train_mb_size=a.batch_size, train_epochs=a.epochs, eval_mb_size=256, device="cpu",
                  evaluator=EvaluationPlugin(loggers=[]))
    if name == "icarl":
        head = nn.Linear(backbone.out_dim, 10)
        model = nn.Sequential(backbone, head)
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
        strategy = ICaRL(feature_extractor=backbone, classifier=head, optimizer=opt, memory_size=a.memory,
                         buffer_transform=None, fixed_memory=True, **common)
    else:
        model = nn.Sequential(backbone, IncrementalClassifier(backbone.out_dim, initial_out_features=2))
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
        ce = nn.CrossEntropyLoss()
        if name == "finetune":
            strategy = Naive(model=model, optimizer=opt, criterion=ce, **common)
        elif name == "replay":
            strategy = Replay(model=model, optimizer=opt, criterion=ce, mem_size=a.memory, **common)
        elif name == "lwf":
            strategy = LwF(model=model, optimizer=opt, criterion=ce, alpha=3.0, temperature=2.0, **common)
        elif name == "ewc":
            strategy = EWC(model=model, optimizer=opt, criterion=ce, ewc_lambda=1000.0, mode="separate", **common)
        else:
            raise ValueError(name)
    rows, train_s = [], 0.0
    for exp, cfs_exp in zip(bench.train_stream, sc.experiences):
        t0 = time.perf_counter()
        strategy.train(exp)
        train_s += time.perf_counter() - t0
        n_seen = max(cfs_exp.classes) + 1
        rows.append(accuracy_row(strategy.model, sc, test_tf, n_seen))
    out = summary(np.array(rows), np.array([len(e.test) for e in sc.experiences]))
    out["train_seconds"] = train_s
    return out


CFS = {"finetune": ("finetune", None), "replay": ("replay", "budget"), "lwf": ("lwf", None), "ewc": ("ewc", None),
       "icarl": ("icarl", "budget")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--only", nargs="*", choices=list(CFS))
    p.add_argument("--repeats", type=int, default=1, help="alternating runs per library; times are medians")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    setting = load_setting(args)
    print(setting.describe(), flush=True)
    rows, ok = [], True
    for name in args.only or list(CFS):
        spec, mem_key = CFS[name]
        options = {spec: {mem_key: args.memory}} if mem_key else None
        ours_runs, theirs_runs = [], []
        for r in range(args.repeats):  # alternate who goes first; report median times
            if r % 2 == 0:
                ours_runs.append(run_cfs(setting, spec, options))
                theirs_runs.append(run_avalanche(setting, name))
            else:
                theirs_runs.append(run_avalanche(setting, name))
                ours_runs.append(run_cfs(setting, spec, options))
        ours, theirs = ours_runs[0], theirs_runs[0]
        ours["train_seconds"] = float(np.median([o["train_seconds"] for o in ours_runs]))
        theirs["train_seconds"] = float(np.median([t["train_seconds"] for t in theirs_runs]))
        print(f"  {name}: cfs {ours['final']:.3f} in {ours['train_seconds']:.0f}s, "
              f"avalanche {theirs['final']:.3f} in {theirs['train_seconds']:.0f}s", file=sys.stderr, flush=True)
        d_acc = 100 * (ours["final"] - theirs["final"])
        speed = theirs["train_seconds"] / max(ours["train_seconds"], 1e-9)
        ok &= d_acc >= -2 and speed >= 1
        rows.append((name, {"cfs": 100 * ours["final"], "ava": 100 * theirs["final"], "d": d_acc,
                            "cfs_f": 100 * ours["forgetting"], "ava_f": 100 * theirs["forgetting"],
                            "cfs_t": ours["train_seconds"], "ava_t": theirs["train_seconds"], "x": speed}))
    print(table(rows, [("cfs final %", "cfs", ".1f"), ("avalanche final %", "ava", ".1f"), ("diff", "d", "+.1f"),
                       ("cfs forg %", "cfs_f", ".1f"), ("avalanche forg %", "ava_f", ".1f"),
                       ("cfs train s", "cfs_t", ".1f"), ("avalanche train s", "ava_t", ".1f"), ("speed-up", "x", ".2f")]))
    print("targets (accuracy no worse than -2 points, time no worse):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
