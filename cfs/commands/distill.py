"""``cfs distill``: the seed papers' own setting, teacher-student distillation on a plain
classification data set.

    cfs distill --train-teacher --teacher-backbone resnet32 --save teacher.pt --data cifar10 --data-root DIR
    cfs distill --teacher teacher.pt --student mlp --loss clkd --data cifar10 --data-root DIR

The first form trains a teacher with cross-entropy and saves it (backbone name, class count,
weights). The second trains the student twice from the same initialisation, alone (CE) and
distilled (CE plus the chosen loss with its METHODS.md defaults), and prints teacher,
student-alone and distilled test accuracy. Student and teacher may differ: NCKD, TRG and PCKD
train a projector from the student's width to the teacher's.

Losses are looked up by name in ``pm.distill_losses`` (the ``cfs_add_distill_losses`` hook;
the built-in five are in :mod:`cfs.losses.distill`), so ``-p mymodule --loss mine`` runs a
plugin's loss with no change here.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from cfs.errors import CfsError, did_you_mean
from cfs.losses.distill import DistillLoss, ExtraLoss

NAME = "distill"


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(NAME, parents=[parent], help="distil a teacher checkpoint into a student (or train a teacher)")
    p.add_argument("--data", default="digits", help="data set name of cfs.data (default digits)")
    p.add_argument("--data-root", help="data folder (e.g. the one holding cifar10-jpg/)")
    p.add_argument("--teacher", metavar="CKPT", help="teacher checkpoint written by --train-teacher --save")
    p.add_argument("--student", default="mlp", metavar="BACKBONE", help="student backbone (default mlp)")
    p.add_argument("--loss", default="kd", metavar="NAME",
                   help="registered distillation loss: kd (default), clkd, nckd, trg, pckd or a plugin's")
    p.add_argument("--clkd-form", choices=("pearson", "covariance", "squared-covariance"),
                   help="with --loss clkd: compare class-correlation matrices as Pearson correlations (default), "
                        "covariances by the non-squared Frobenius norm (stable), or METHODS.md's squared form")
    p.add_argument("--train-teacher", action="store_true", help="train a teacher with CE instead, and --save it")
    p.add_argument("--teacher-backbone", default="resnet32", help="backbone of --train-teacher (default resnet32)")
    p.add_argument("--save", metavar="CKPT", help="where --train-teacher writes the teacher")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--train-per-class", type=int, help="use only this many training images per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads")


# ------------------------------------------------------------------------------------ models
def build(backbone: str, data, n_classes: int, pm) -> nn.Module:
    from cfs.models.backbones import build_backbone
    from cfs.models.heads import IncrementalLinear
    from cfs.models.model import ContinualModel

    shape = data.input_shape
    net = build_backbone(pm.backbones, backbone, in_channels=shape[0], image_size=shape[-1])
    return ContinualModel(net, IncrementalLinear(net.out_dim, n_classes))


def load_teacher(path: str, data, pm, device: torch.device) -> nn.Module:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CfsError(f"teacher checkpoint {path!r} does not exist; write one with cfs distill --train-teacher --save {path}") from None
    except Exception as exc:  # not a torch file, truncated, or holding arbitrary objects
        raise CfsError(f"teacher checkpoint {path!r} cannot be read ({type(exc).__name__}); "
                       f"write one with cfs distill --train-teacher --save PATH") from None
    if not isinstance(ckpt, dict) or not {"backbone", "num_classes", "state_dict"} <= ckpt.keys():
        raise CfsError(f"{path!r} is not a teacher checkpoint of cfs distill (it needs backbone, num_classes and "
                       f"state_dict); write one with cfs distill --train-teacher --save PATH")
    if ckpt.get("data") != data.name:
        raise CfsError(f"teacher {path!r} was trained on {ckpt.get('data')!r}, not {data.name!r}; pass --data {ckpt.get('data')}")
    model = build(ckpt["backbone"], data, ckpt["num_classes"], pm)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval().requires_grad_(False)
    return model


# ------------------------------------------------------------------------------------ training
def train(model: nn.Module, data, transform, args, device, extra: ExtraLoss | None = None,
          extra_params: list[nn.Parameter] | None = None, base_weight: float = 1.0) -> float:
    """SGD (momentum 0.9, wd 5e-4, cosine) for ``args.epochs``; returns seconds."""
    params = list(model.parameters()) + list(extra_params or [])
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    g = torch.Generator().manual_seed(args.seed)
    x_all, y_all = data.train.x.to(device), data.train.y.to(device)
    t0 = time.perf_counter()
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(y_all), generator=g).to(device)
        for s in range(0, len(order), args.batch_size):
            idx = order[s : s + args.batch_size]
            x, y = transform(x_all[idx], train=True, generator=g), y_all[idx]
            feats, logits = model.forward_all(x)
            loss = base_weight * F.cross_entropy(logits, y)
            if extra is not None:
                loss = loss + extra(x, y, feats, logits, epoch + 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return time.perf_counter() - t0


@torch.no_grad()
def accuracy(model: nn.Module, data, transform, device) -> float:
    model.eval()
    x, y = data.test.x.to(device), data.test.y.to(device)
    hits = sum(int((model(transform(x[i : i + 500])).argmax(1) == y[i : i + 500]).sum()) for i in range(0, len(y), 500))
    model.train()
    return hits / len(y)


# ------------------------------------------------------------------------------------ command
def distill_loss(pm, name: str) -> DistillLoss:
    """The registered distillation loss ``name``; an unknown name is a one-line CfsError that
    lists the registered ones (the names are only known once plugins are loaded)."""
    if name not in pm.distill_losses:
        valid = ", ".join(pm.distill_losses) or "none"
        raise CfsError(f"unknown distillation loss {name!r}{did_you_mean(name, pm.distill_losses)}; "
                       f"registered losses: {valid}")
    return pm.distill_losses.get(name)


def run(args: argparse.Namespace) -> int:
    from cfs.data import load_dataset
    from cfs.data.arrays import DataSplit
    from cfs.data.transforms import BatchTransform
    from cfs.engine.devices import resolve_device, seed_everything
    from cfs.plugins import get_plugin_manager

    if args.threads:
        torch.set_num_threads(args.threads)
    pm = get_plugin_manager(args.plugins)
    loss = None if args.train_teacher else distill_loss(pm, args.loss)
    if getattr(args, "clkd_form", None) is not None:
        if loss is None or not hasattr(loss, "form") or args.loss != "clkd":
            raise CfsError("--clkd-form applies only with --loss clkd")
        import dataclasses

        loss = dataclasses.replace(loss, form=args.clkd_form)
    device = resolve_device(args.device)
    data = load_dataset(args.data, root=args.data_root)
    if args.train_per_class:
        g = torch.Generator().manual_seed(args.seed)
        order = torch.randperm(len(data.train), generator=g)
        keep = torch.cat([order[data.train.y[order] == c][: args.train_per_class] for c in range(data.num_classes)])
        data = DataSplit(data.name, data.train.subset(keep.sort().values), data.test, data.mean, data.std)
    rgb = data.input_shape[0] == 3 and data.input_shape[-1] >= 32
    transform = BatchTransform(data.mean, data.std, crop_padding=4 if rgb else 0, flip=rgb)
    n = data.num_classes
    if args.train_teacher:
        if not args.save:
            raise CfsError("--train-teacher needs --save CKPT (where to write the teacher)")
        seed_everything(args.seed)
        teacher = build(args.teacher_backbone, data, n, pm).to(device)
        secs = train(teacher, data, transform, args, device)
        torch.save({"backbone": args.teacher_backbone, "num_classes": n, "data": data.name,
                    "state_dict": {k: v.cpu() for k, v in teacher.state_dict().items()}}, args.save)
        print(f"teacher {args.teacher_backbone} on {data.name}: test accuracy {100 * accuracy(teacher, data, transform, device):.2f}% "
              f"({args.epochs} epochs, {secs:.0f}s); saved to {args.save}")
        return 0
    if not args.teacher:
        raise CfsError("pass --teacher CKPT (or --train-teacher --save CKPT to make one first)")
    teacher = load_teacher(args.teacher, data, pm, device)
    seed_everything(args.seed)
    alone = build(args.student, data, n, pm).to(device)
    init = {k: v.clone() for k, v in alone.state_dict().items()}
    t_alone = train(alone, data, transform, args, device)
    student = build(args.student, data, n, pm).to(device)
    student.load_state_dict(init)
    dist = loss.build(teacher, student, data, transform, device)
    t_dist = train(student, data, transform, args, device, dist.extra, dist.parameters, dist.ce_weight)
    acc_t, acc_a, acc_d = (accuracy(m, data, transform, device) for m in (teacher, alone, student))
    print(f"data {data.name}, teacher {args.teacher}, student {args.student}, loss {args.loss}, {args.epochs} epochs, seed {args.seed}")
    print(f"teacher accuracy        {100 * acc_t:6.2f}%")
    print(f"student alone accuracy  {100 * acc_a:6.2f}%  ({t_alone:.0f}s)")
    print(f"distilled accuracy      {100 * acc_d:6.2f}%  ({t_dist:.0f}s, {100 * (acc_d - acc_a):+.2f} points)")
    if dist.report is not None:
        print(dist.report())
    return 0
