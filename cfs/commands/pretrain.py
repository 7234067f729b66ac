"""``cfs pretrain``: supervised pre-training of a registered backbone, saved for ``--weights``.

    cfs pretrain --backbone vit-tiny --data mini-imagenet --data-root /tmp/mini --image-size 32 --out vit.pt
    cfs bench --backbone vit-tiny --weights vit.pt --scenario split-cifar10 --strategy ranpac ...

Pre-trained-model continual learning needs a pre-trained model; where no published weights
can be loaded (no internet, or a backbone with none, such as ``vit-tiny``), this trains one with
cross-entropy on a data set *disjoint from the continual stream* (e.g. the 36 mini-ImageNet
val+test classes, none of which is a CIFAR class) and writes a checkpoint the same backbone
loads with ``--weights``. Every image of every class of the data set is used for training
(both parts of a train/test folder, since pre-training classes are not evaluated), except a
held-out fraction (``--val-fraction``) whose accuracy is printed.

Recipe (the DeiT-style defaults for ViTs trained from scratch, shortened): AdamW (lr 1e-3,
weight decay 0.05) or SGD (momentum 0.9), linear warm-up then cosine decay per step, label
smoothing 0.1, random crop (padding side/8) and horizontal flip, batch 128.

The checkpoint holds ``state_dict`` (the backbone's tensors), the backbone name, image size,
channels, the input mean/std used in training (loading it makes runs normalise the same way)
and the class names.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cfs.errors import CfsError, unknown

NAME = "pretrain"


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(NAME, parents=[parent], help="pre-train a backbone on a disjoint data set for --weights")
    p.add_argument("--backbone", default="vit-tiny", help="registered backbone (default vit-tiny)")
    p.add_argument("--data", default="mini-imagenet", help="data set name of cfs.data (default mini-imagenet)")
    p.add_argument("--data-root", help="its folder (mini-ImageNet: the one holding images/ and the split CSVs)")
    p.add_argument("--image-size", type=int, default=32, help="decode images at this side in px (default 32)")
    p.add_argument("--out", required=True, metavar="PATH", help="where to write the checkpoint")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3 adamw, 0.1 sgd)")
    p.add_argument("--weight-decay", type=float, help="default 0.05 adamw, 5e-4 sgd")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--max-per-class", type=int, help="use at most this many images per class")
    p.add_argument("--val-fraction", type=float, default=0.05, help="held-out share of each class (default 0.05)")
    p.add_argument("--init", metavar="PATH", help="start from the backbone weights of a checkpoint cfs pretrain "
                   "wrote (same backbone and image size) to train more epochs without starting over; the classifier "
                   "head starts fresh and the learning-rate schedule starts again")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def check_args(args: argparse.Namespace, pm) -> None:
    """Every mistake a user can make, as one line, before anything is loaded or trained."""
    from cfs.data import DATASETS

    if args.backbone not in pm.backbones:
        raise unknown("backbone", args.backbone, pm.backbones)
    if args.data not in DATASETS:
        raise unknown("data set", args.data, DATASETS)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise CfsError(f"--data-root {args.data_root!r}: no such folder")
    for flag, value, low in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 2),
                             ("--image-size", args.image_size, 8)):
        if value < low:
            raise CfsError(f"{flag} must be at least {low}, got {value}")
    if args.lr is not None and args.lr < 0:
        raise CfsError(f"--lr must be >= 0, got {args.lr:g}")
    if args.max_per_class is not None and args.max_per_class < 2:
        raise CfsError(f"--max-per-class must be at least 2, got {args.max_per_class}")
    if not 0 <= args.val_fraction < 1:
        raise CfsError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if not 0 <= args.label_smoothing < 1:
        raise CfsError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    args.init_checkpoint = load_init(args) if args.init else None
    out = Path(args.out)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise CfsError(f"--out {args.out!r} is a folder; give a file path such as {out / 'backbone.pt'}")
    if not parent.is_dir():
        raise CfsError(f"--out {args.out!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise CfsError(f"--out {args.out!r} is not writable")


def load_init(args: argparse.Namespace) -> dict:
    """The ``--init`` checkpoint, refused in one line unless cfs pretrain wrote it for this
    backbone at this image size."""
    path = Path(args.init)
    if not path.is_file():
        raise CfsError(f"--init {args.init!r}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CfsError(f"--init {args.init!r} is not a checkpoint cfs pretrain wrote ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "backbone" not in ckpt:
        raise CfsError(f"--init {args.init!r} is not a checkpoint cfs pretrain wrote")
    if ckpt["backbone"] != args.backbone or ckpt.get("image_size") != args.image_size:
        raise CfsError(f"--init {args.init!r} holds {ckpt['backbone']} at {ckpt.get('image_size')} px; this run trains "
                       f"{args.backbone} at {args.image_size} px")
    return ckpt


def load_images(args: argparse.Namespace):
    """All labelled images of the data set (train and test parts together), as one ArrayDataset."""
    from cfs.data import dataset_options, load_dataset
    from cfs.data.arrays import ArrayDataset

    options = {"image_size": args.image_size} if "image_size" in dataset_options(args.data) else {}
    data = load_dataset(args.data, root=args.data_root, **options)
    parts = [p for p in (data.train, data.test) if len(p)]
    images = ArrayDataset.concat(parts) if len(parts) > 1 else parts[0]
    if images.x.dtype != torch.uint8 or images.x.dim() != 4:
        raise CfsError(f"cfs pretrain needs an image data set; {args.data!r} holds {tuple(images.x.shape[1:])} "
                       f"{images.x.dtype} rows")
    if images.x.shape[-1] != args.image_size:  # a loader without an image_size option
        images = ArrayDataset(F.interpolate(images.x.float(), size=args.image_size, mode="bilinear",
                                            antialias=True).round().clamp(0, 255).to(torch.uint8),
                              images.y, images.class_names)
    return data, images


def split_per_class(y: torch.Tensor, val_fraction: float, max_per_class: int | None,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and held-out images: a shuffled ``val_fraction`` of each class held out."""
    train, val = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        if max_per_class is not None:
            idx = idx[:max_per_class]
        n_val = int(round(val_fraction * len(idx)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def accuracy(net: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor, transform, device) -> float:
    net.eval()
    hits = 0
    for i in range(0, len(y), 256):
        hits += int((head(net(transform(x[i : i + 256].to(device)))).argmax(1).cpu() == y[i : i + 256]).sum())
    return hits / max(len(y), 1)


def run(args: argparse.Namespace) -> int:
    from cfs.commands.base import plugin_manager
    from cfs.data.transforms import BatchTransform
    from cfs.engine.devices import resolve_device, seed_everything
    from cfs.models.backbones import build_backbone

    pm = plugin_manager(args)
    check_args(args, pm)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    generator = seed_everything(args.seed)
    data, images = load_images(args)
    in_channels = images.x.shape[1]
    net = build_backbone(pm.backbones, args.backbone, in_channels=in_channels, image_size=args.image_size).to(device)
    init = args.init_checkpoint
    if init is not None:
        if init.get("in_channels", in_channels) != in_channels:
            raise CfsError(f"--init {args.init!r} was trained on {init['in_channels']}-channel images; "
                           f"{args.data!r} has {in_channels}")
        net.load_state_dict(init["state_dict"])
    labels = images.y.long()
    classes = torch.unique(labels)
    remap = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    labels = remap[labels]
    tr, va = split_per_class(labels, args.val_fraction, args.max_per_class, generator)
    x_tr, y_tr, x_va, y_va = images.x[tr], labels[tr], images.x[va], labels[va]
    mean = tuple(float(v) for v in data.mean)
    std = tuple(float(v) for v in data.std)
    rgb = in_channels == 3
    transform = BatchTransform(mean, std, crop_padding=max(1, args.image_size // 8) if rgb else 0, flip=rgb)
    head = nn.Linear(net.out_dim, len(classes)).to(device)
    params = list(net.parameters()) + list(head.parameters())
    if args.optimizer == "adamw":
        lr, wd = 1e-3 if args.lr is None else args.lr, 0.05 if args.weight_decay is None else args.weight_decay
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    else:
        lr, wd = 0.1 if args.lr is None else args.lr, 5e-4 if args.weight_decay is None else args.weight_decay
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
    steps_per_epoch = math.ceil(len(y_tr) / args.batch_size)
    total, warmup = args.epochs * steps_per_epoch, int(args.warmup_epochs * steps_per_epoch)
    if init is not None:
        print(f"starting from {args.init} ({init.get('epochs')} epochs, held-out accuracy "
              f"{100 * float(init.get('held_out_accuracy', float('nan'))):.1f}%)", flush=True)
    print(f"pretrain {args.backbone} on {args.data} ({len(classes)} classes, {len(y_tr)} train / {len(y_va)} held-out "
          f"images, {args.image_size} px), {args.epochs} epochs, {args.optimizer} lr {lr}", flush=True)
    step, t0 = 0, time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(y_tr), generator=generator)
        run_loss, seen = 0.0, 0
        for s in range(0, len(order), args.batch_size):
            idx = order[s : s + args.batch_size]
            if len(idx) < 2:
                continue
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, lr)
            xb = transform(x_tr[idx].to(device), train=True, generator=generator)
            loss = F.cross_entropy(head(net(xb)), y_tr[idx].to(device), label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run_loss, seen = run_loss + float(loss.detach()) * len(idx), seen + len(idx)
        if not math.isfinite(run_loss):
            raise CfsError(f"pre-training diverged in epoch {epoch + 1} (loss {run_loss}); lower --lr")
        acc = accuracy(net, head, x_va, y_va, transform, device) if len(y_va) else float("nan")
        print(f"epoch {epoch + 1}/{args.epochs}: loss {run_loss / max(seen, 1):.3f}, held-out accuracy "
              f"{100 * acc:.1f}% ({time.perf_counter() - t0:.0f}s)", flush=True)
    names = list(images.class_names) if images.class_names else []
    ckpt = {"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "backbone": args.backbone,
            "image_size": args.image_size, "in_channels": in_channels, "mean": list(mean), "std": list(std),
            "data": args.data, "classes": [names[int(c)] for c in classes] if names else classes.tolist(),
            "epochs": args.epochs + (int(init.get("epochs", 0)) if init is not None else 0),
            "held_out_accuracy": acc}
    if init is not None:
        ckpt["init"] = {"path": str(args.init), "epochs": init.get("epochs"), "held_out_accuracy": init.get("held_out_accuracy")}
    tmp = Path(str(args.out) + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, args.out)
    print(f"saved {args.out}; use it with --backbone {args.backbone} --weights {args.out}")
    return 0
