"""``cfs distill``: the seed papers' own setting, teacher-student distillation on a plain
classification data set.

    cfs distill --train-teacher --teacher-backbone resnet32 --save teacher.pt --data cifar10 --data-root DIR
    cfs distill --teacher teacher.pt --student mlp --loss clkd --data cifar10 --data-root DIR

The first form trains a teacher with cross-entropy and saves it (backbone name, class count,
weights). The second trains the student twice from the same initialisation, alone (CE) and
distilled (CE plus the chosen loss of :mod:`cfs.losses` with its METHODS.md defaults), and
prints teacher, student-alone and distilled test accuracy. Student and teacher may differ:
NCKD, TRG and PCKD train a projector from the student's width to the teacher's.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cfs.errors import CfsError

NAME = "distill"
LOSSES = ("kd", "clkd", "nckd", "trg", "pckd")


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(NAME, parents=[parent], help="distil a teacher checkpoint into a student (or train a teacher)")
    p.add_argument("--data", default="digits", help="data set name of cfs.data (default digits)")
    p.add_argument("--data-root", help="data folder (e.g. the one holding cifar10-jpg/)")
    p.add_argument("--teacher", metavar="CKPT", help="teacher checkpoint written by --train-teacher --save")
    p.add_argument("--student", default="mlp", metavar="BACKBONE", help="student backbone (default mlp)")
    p.add_argument("--loss", default="kd", choices=LOSSES, help="distillation loss (default kd)")
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
Extra = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def train(model: nn.Module, data, transform, args, device, extra: Extra | None = None,
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


@torch.no_grad()
def nc3_accuracy(model: nn.Module, projector: nn.Module, data, transform, device) -> float:
    """Test accuracy of NCKD's post-hoc NC3 head: the student's linear head replaced by the
    cosine classifier to its normalised centred class means in projected space, computed over
    the training set with the test transform (METHODS.md 5.2)."""
    from cfs import losses as L

    model.eval()
    projector.eval()

    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([projector(model.features(transform(x[i : i + 500]))) for i in range(0, len(x), 500)])

    means, glob, _ = L.class_means(embed(data.train.x.to(device)), data.train.y.to(device), data.num_classes)
    pred = L.nc3_logits(embed(data.test.x.to(device)), L.centred_directions(means, glob)).argmax(1)
    model.train()
    projector.train()
    return float((pred == data.test.y.to(device)).float().mean())


# ------------------------------------------------------------------------------------ losses
def align_tokens(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger square token grid to the smaller one (METHODS.md 6.2)."""
    if s.shape[1] == t.shape[1]:
        return s, t

    def pool(tok: torch.Tensor, n: int) -> torch.Tensor:
        b, m, d = tok.shape
        side = int(round(m ** 0.5))
        grid = tok.transpose(1, 2).reshape(b, d, side, side)
        out = int(round(n ** 0.5))
        return F.adaptive_avg_pool2d(grid, out).flatten(2).transpose(1, 2)

    return (pool(s, t.shape[1]), t) if s.shape[1] > t.shape[1] else (s, pool(t, s.shape[1]))


def distillation(loss: str, teacher: nn.Module, student: nn.Module, data, transform, device):
    """(extra-loss closure, extra parameters, CE weight) of ``loss`` with METHODS.md defaults."""
    from cfs import losses as L

    d_s, d_t = student.backbone.out_dim, teacher.backbone.out_dim
    n_classes = teacher.num_classes
    if loss == "kd":
        return (lambda x, y, f, z, e: L.kd_loss(z, teacher(x), 4.0)), [], 1.0
    if loss == "clkd":
        # Pearson correlation, as the clkd plugin: the raw-logit covariance term diverges
        return (lambda x, y, f, z, e: L.clkd_loss(z, teacher(x), pearson=True)), [], 0.1
    if loss == "nckd":
        proj = nn.Sequential(nn.Linear(d_s, d_t), nn.BatchNorm1d(d_t)).to(device)
        with torch.no_grad():
            xs = data.train.x.to(device)
            feats = torch.cat([teacher.features(transform(xs[i : i + 500])) for i in range(0, len(xs), 500)])
            means, glob, _ = L.class_means(feats, data.train.y.to(device), n_classes)
            t_dirs = L.centred_directions(means, glob)
        ema = L.ClassMeanEMA(n_classes, d_t, 0.9, device)

        def nckd(x, y, f, z, e):
            zp = proj(f)
            s_means, s_glob = ema.update(zp, y)
            seen = ema.seen
            nc2 = L.nc2_loss(L.centred_directions(s_means[seen], s_glob), t_dirs[seen]) if int(seen.sum()) > 1 else 0.0
            return L.kd_loss(z, teacher(x), 4.0) + L.nc1_loss(zp, y, t_dirs, glob) + nc2

        nckd.projector = proj  # for the post-hoc NC3 head (nc3_accuracy)
        return nckd, list(proj.parameters()), 1.0
    if loss == "trg":
        probe = torch.zeros(2, *data.input_shape, device=device)
        with torch.no_grad():
            dims = student.tokens(probe).shape[-1], teacher.tokens(probe).shape[-1]
        proj = nn.Linear(*dims).to(device)
        g = torch.Generator().manual_seed(0)

        def trg(x, y, f, z, e):
            with torch.no_grad():
                t_tok = teacher.tokens(x)
            s_tok, t_tok = align_tokens(proj(student.tokens(x)), t_tok)
            return L.kd_loss(z, teacher(x), 4.0) + L.trg_loss(s_tok, t_tok, generator=g)

        return trg, list(proj.parameters()), 1.0
    if loss == "pckd":
        from cfs_plugins.pckd import PCKDHeads, head_matrix, rotated_views

        heads = PCKDHeads(d_s, d_t).to(device)

        def pckd(x, y, f, z, e):
            b = len(y)
            f_rot, _ = student.forward_all(rotated_views(x, 4)[b:])
            f_s = torch.cat([f, f_rot])
            with torch.no_grad():
                f_t, z_t = teacher.forward_all(rotated_views(x, 4))
            w = L.pckd_preview_weights(F.cross_entropy(z, y, reduction="none"), e)
            out = (w * L.kd_loss(z, z_t[:b], 4.0, reduction="none")).mean()
            u = F.normalize(heads.embed_s(f_s), dim=1) @ student.head.weight.T
            v = F.normalize(heads.embed_t(f_s), dim=1) @ teacher.head.weight.T
            out = out + 0.1 * (w.repeat(4) * L.category_contrastive_loss(u, v, y.repeat(4))).mean()
            s_w, t_w = head_matrix(student.head, n_classes), head_matrix(teacher.head, n_classes)
            if s_w.shape == t_w.shape:
                out = out + F.mse_loss(s_w, t_w)
            return out + L.feature_alignment_loss(heads.mlp(f_s), f_t)

        return pckd, list(heads.parameters()), 1.0
    raise CfsError(f"unknown distillation loss {loss!r}; use one of {', '.join(LOSSES)}")


# ------------------------------------------------------------------------------------ command
def run(args: argparse.Namespace) -> int:
    from cfs.data import load_dataset
    from cfs.data.arrays import DataSplit
    from cfs.data.transforms import BatchTransform
    from cfs.engine.devices import resolve_device, seed_everything
    from cfs.plugins import get_plugin_manager

    if args.threads:
        torch.set_num_threads(args.threads)
    pm = get_plugin_manager(args.plugins)
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
    extra, params, ce_weight = distillation(args.loss, teacher, student, data, transform, device)
    t_dist = train(student, data, transform, args, device, extra, params, ce_weight)
    acc_t, acc_a, acc_d = (accuracy(m, data, transform, device) for m in (teacher, alone, student))
    print(f"data {data.name}, teacher {args.teacher}, student {args.student}, loss {args.loss}, {args.epochs} epochs, seed {args.seed}")
    print(f"teacher accuracy        {100 * acc_t:6.2f}%")
    print(f"student alone accuracy  {100 * acc_a:6.2f}%  ({t_alone:.0f}s)")
    print(f"distilled accuracy      {100 * acc_d:6.2f}%  ({t_dist:.0f}s, {100 * (acc_d - acc_a):+.2f} points)")
    if args.loss == "nckd":
        acc_nc3 = nc3_accuracy(student, extra.projector, data, transform, device)
        print(f"distilled, NC3 head:    {100 * acc_nc3:6.2f}%  (cosine to the student's class means)")
    return 0
