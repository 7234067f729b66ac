"""Mamba-FSCIL (Li, Yang, Wu, Wang, Zhang, Chen, Li, Zhang; 2024, "Mamba-FSCIL: Dynamic
Adaptation with Selective State Space Model for Few-Shot Class-Incremental Learning").

[CODE, xiaojieli0903/Mamba-FSCIL: ``mmfscil/models/mamba_ffn_neck.py`` (``MambaNeck``),
``classifier.py`` (``ImageClassifierCIL``), ``ETFHead.py``, ``apis/fscil.py``, the CIFAR configs]

**Dual selective SSM projector** on the backbone's feature map (pooled to ``feat_size`` x
``feat_size``; the code's ResNet-12 gives 2x2 on CIFAR): a branch is a 1x1-conv MLP (in -> 2 in,
LayerNorm, LeakyReLU 0.1, -> out), a learnt positional embedding, and a Mamba block
(:class:`cfs.models.ssm.MambaBlock`, expand 1, no output projection, ``d_state = dt_rank = 256``)
scanning the positions in four orders (row-major, reversed, column-major, reversed), summed and
averaged over positions; the output adds the average-pooled feature map (the identity branch).
The base session trains the backbone and the **main branch**; every incremental session trains
only the **new branch** (its gate projection zero-initialised, so it starts as a no-op) on
frozen-backbone features, the main branch and identity detached.

**ETF head.** A fixed simplex ETF over all classes of the stream (``cfs.models.prototypes``);
``score = normalize(out) . e_c``. Loss: the dot-regression loss ``0.5 * mean((f . t - |t|)^2)``
times 10 (:func:`dot_regression_loss`); in incremental sessions the targets are scaled by the
code's class-balancing lengths ``sqrt((batch / n_labels) / count_c)`` (``with_len``).

**Base session.** Batch mixup (alpha 0.8, p 0.4) or CutMix (alpha 1, p 0.4) or nothing (p 0.2);
the loss is ``lam * L(y_a) + (1 - lam) * L(y_b) + L(y_a)``: the code deletes the first
head loss under its augment branch, then adds ``L(y_a)`` again at the end of ``forward_train``;
cfs computes the same sum.

**Incremental session t** (``apis/fscil.py``, ``mean_neck_feat``): the training set is the
session's shot features, one mean feature per earlier novel class and one per base class; 200
steps (CIFAR ``step_list``) of batches of 8, SGD lr 0.25 (momentum 0.9, wd 5e-4), linear
warm-up (5 steps) and cosine to 1% with a 5-step cool-down. Loss: ETF loss on features mixed with
probability 0.75 (``lam = 0.5``, the code's ``mixup_feat``), plus the **class-sensitive
suppression losses** (:func:`suppression_loss`, :func:`separation_loss`) on the new branch:
``100 * |z_base|_F / numel - 1e-5 * |z_novel|_F / numel`` on the gate ``z`` (pushes the new
branch's gate towards zero for base classes, open for novel ones) and ``0.001 * mean|I - S|`` of
the cosine similarities ``S`` of the batch-mean selective parameters (``dt``, ``B``, ``C`` of the
row-major scan) of base versus novel samples.

Departures: the code sums the four scans' gates after flipping the *channel* axis of the reversed
scans (``C_hf.flip([1])`` on a (b, d, L) tensor); cfs aligns them by position. The base-session
schedule and optimizer are the engine's (``--lr``, ``--schedule``; the code uses lr 0.25 cosine
with warm-up over 200 epochs). With a stream of more classes than feature channels the projector
outputs as many channels as classes (the ETF needs ``d >= K``) through a linear residual projection
(the code's ``use_residual_proj``). The sessions clip the gradient norm at 1 (``grad_clip``; the
code's default is no clipping, which diverged within ten steps at lr 0.25 on cfs's 64-channel
ResNet-20 features). ``steps`` is what a CPU run lowers.

At cfs's CPU scale (64-channel ResNet-20 maps, a 5-class base session) the official base-class
suppression weight (``supp_base = 100``) keeps the new branch's gate closed for every sample: the
sessions leave the predictions unchanged and novel classes are never predicted on fscil-cifar10
(``benchmarks/reproduce/fscil.py``); with ``-o mamba-fscil.supp_base=1`` (or 0) the new branch
learns the novel classes. The code's weight was tuned for 640-channel ResNet-12 maps, where the
``|z|_F / numel`` normalisation makes the term about sqrt(10) times weaker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.features import compute_features, run_cache
from cfs.models.prototypes import orthonormal_basis, simplex_etf
from cfs.models.ssm import MambaBlock, SelectiveParams
from cfs.registry import Registry
from cfs.strategy import Strategy


# ----------------------------------------------------------------------------- losses
def dot_regression_loss(feat: torch.Tensor, target: torch.Tensor, target_norm: torch.Tensor | None = None) -> torch.Tensor:
    """``0.5 * mean((f . t - m)^2)``, ``m`` = ``target_norm`` (1 when None); ``feat`` normalised."""
    dot = (feat * target).sum(1)
    m = torch.ones_like(dot) if target_norm is None else target_norm
    return 0.5 * ((dot - m) ** 2).mean()


def length_rect(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The code's ``produce_training_rect``: ``sqrt((batch / n_labels) / count_c)`` for the labels
    in the batch, 1 elsewhere; (num_classes,)."""
    uniq, count = torch.unique(labels, return_counts=True)
    gamma = labels.numel() / uniq.numel()
    rect = torch.ones(num_classes, device=labels.device)
    rect[uniq] = torch.sqrt(gamma / count.float())
    return rect


def suppression_loss(z: torch.Tensor, is_base: torch.Tensor, w_base: float, w_novel: float) -> torch.Tensor:
    """``w_base * |z_base|_F / numel(z_base) - w_novel * |z_novel|_F / numel(z_novel)`` (a term
    is left out when its group is empty or its weight 0)."""
    loss = z.new_zeros(())
    if w_base > 0 and bool(is_base.any()):
        zb = z[is_base]
        loss = loss + w_base * zb.norm() / zb.numel()
    if w_novel > 0 and bool((~is_base).any()):
        zn = z[~is_base]
        loss = loss - w_novel * zn.norm() / zn.numel()
    return loss


def separation_loss(params: torch.Tensor, is_base: torch.Tensor) -> torch.Tensor:
    """``mean(|I - S|)``, ``S`` the 2x2 cosine similarities of the mean of ``params`` (b, k, L)
    over base samples and over novel samples (averaged over samples and positions)."""
    means = torch.stack([params[is_base].mean((0, 2)), params[~is_base].mean((0, 2))])
    unit = F.normalize(means, dim=-1)
    return (torch.eye(2, device=params.device) - unit @ unit.T).abs().mean()


def session_lr(step: int, steps: int, lr: float, warmup: int = 5, cooldown: int = 5) -> float:
    """The incremental sessions' schedule (mmcls ``CosineAnnealingCooldown`` with linear warm-up):
    cosine from ``lr`` to ``lr/100`` over ``steps - cooldown``, then ``lr/1000``; the first
    ``warmup`` steps scaled from 0.1 up. ``step`` counts from 1."""
    target = 0.01 * lr
    if step > steps - cooldown:
        return target * 0.1
    span = max(steps - cooldown, 1)
    value = target + 0.5 * (lr - target) * (1 + math.cos(math.pi * step / span))
    if step < warmup:
        value *= 1 - (1 - step / warmup) * 0.9
    return value


# ----------------------------------------------------------------------------- projector
class SsmBranch(nn.Module):
    """One selective SSM branch: 1x1-conv MLP, positional embedding, Mamba block over four scan orders."""

    def __init__(self, cin: int, cout: int, size: int, d_state: int, dt_rank: int) -> None:
        super().__init__()
        mid = 2 * cin
        self.mlp = nn.Sequential(nn.Conv2d(cin, mid, 1), nn.LayerNorm([mid, size, size]), nn.LeakyReLU(0.1),
                                 nn.Conv2d(mid, cout, 1, bias=False))
        self.pos = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, size * size, cout), std=0.02))
        self.block = MambaBlock(cout, d_state=d_state, expand=1, dt_rank=dt_rank, use_out_proj=False)

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, SelectiveParams]:
        """Pooled output (b, cout), the gate summed over the four scans (b, cout, L) and the
        row-major scan's selective parameters."""
        b, _, h, w = fmap.shape
        tokens = self.mlp(fmap).flatten(2).transpose(1, 2) + self.pos  # (b, L, cout), row-major
        col = torch.arange(h * w, device=fmap.device).view(h, w).T.reshape(-1)  # column-major order
        back = torch.argsort(col)
        out_h, p = self.block(tokens)
        out_hf, p_hf = self.block(tokens.flip(1))
        out_v, p_v = self.block(tokens[:, col])
        out_vf, p_vf = self.block(tokens[:, col].flip(1))
        out = out_h + out_hf.flip(1) + out_v[:, back] + out_vf.flip(1)[:, back]
        z = p.z + p_hf.z.flip(2) + p_v.z[:, :, back] + p_vf.z.flip(2)[:, :, back]
        return out.mean(1), z, p


class DualSelectiveProjector(nn.Module):
    """Mamba-FSCIL's neck: identity + main SSM branch, plus the new branch of incremental sessions."""

    def __init__(self, cin: int, cout: int, size: int, d_state: int, dt_rank: int) -> None:
        super().__init__()
        self.size = size
        self.args = (cin, cout, size, d_state, dt_rank)
        self.main = SsmBranch(*self.args)
        self.residual = nn.Linear(cin, cout, bias=False) if cin != cout else None
        self.new: SsmBranch | None = None

    def add_new_branch(self) -> None:
        """The incremental branch, its gate rows of the input projection zero (starts as a no-op)."""
        self.new = SsmBranch(*self.args).to(self.main.pos.device)
        with torch.no_grad():
            self.new.block.in_proj.weight[self.new.block.d_inner :].zero_()

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap if fmap.shape[-1] == self.size and fmap.shape[-2] == self.size else \
            F.adaptive_avg_pool2d(fmap, self.size)

    def forward(self, fmap: torch.Tensor) -> dict[str, Any]:
        fmap = self.pool(fmap)
        identity = fmap.mean((2, 3))
        if self.residual is not None:
            identity = self.residual(identity)
        x, z, params = self.main(fmap)
        if self.new is None:
            return {"out": x + identity, "z": z, "params": params}
        x_new, z_new, p_new = self.new(fmap.detach())
        return {"out": x.detach() + identity.detach() + x_new, "z": z_new, "params": p_new}


class _FeatureMap(nn.Module):
    """The backbone's feature map pooled to the projector's size (what the sessions train on)."""

    def __init__(self, backbone: nn.Module, size: int) -> None:
        super().__init__()
        self.backbone, self.size = backbone, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.backbone.feature_map(x), self.size)


# ----------------------------------------------------------------------------- strategy
@dataclass
class MambaFscilOptions:
    d_state: int = 256
    #: rank of dt; 0 = d_state (the code's ``d_rank`` default)
    dt_rank: int = 0
    feat_size: int = 2
    #: projector channels; 0 = the backbone's, or the number of classes when larger
    out_channels: int = 0
    dr_weight: float = 10.0
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mixup_prob: float = 0.4
    cutmix_prob: float = 0.4
    #: incremental sessions: steps, batch, learning rate
    steps: int = 200
    batch: int = 8
    lr: float = 0.25
    feat_mixup_prob: float = 0.75
    supp_base: float = 100.0
    supp_novel: float = 1e-5
    sep_new: float = 0.001
    #: max gradient norm in the sessions (the code's ``grad_clip``, None there); 0 = off
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.d_state < 1 or self.dt_rank < 0 or self.feat_size < 1 or self.out_channels < 0:
            raise ValueError("d_state and feat_size must be >= 1, dt_rank and out_channels >= 0")
        if self.steps < 0 or self.batch < 1 or self.lr <= 0:
            raise ValueError("steps >= 0, batch >= 1 and lr > 0 are needed")
        if not 0 <= self.mixup_prob + self.cutmix_prob <= 1:
            raise ValueError("mixup_prob + cutmix_prob must lie in [0, 1]")


class MambaFscil(Strategy):
    """Mamba-FSCIL: dual selective SSM projector, class-sensitive selective scan, ETF head."""

    name = "mamba-fscil"
    compatibility = frozenset({"fscil"})
    Options = MambaFscilOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.projector: DualSelectiveProjector | None = None
        self.etf: torch.Tensor | None = None
        self.n_base = 0
        self.memory_x: torch.Tensor | None = None  # one mean feature map per base / earlier novel class
        self.memory_y: torch.Tensor | None = None
        self.session_images = 0

    def _rng(self, state: RunState) -> np.random.Generator:
        return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=state.generator)))

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        o, backbone = self.options, state.model.backbone
        if not hasattr(backbone, "feature_map"):
            raise CfsError("Mamba-FSCIL needs a backbone with a feature map (resnet20, resnet32, reduced-resnet18)")
        exps = state.scenario.experiences
        k = sum(len(e.classes) for e in exps)
        cin = int(backbone.out_dim)
        cout = o.out_channels or max(cin, k)
        if cout < k:
            raise CfsError(f"the ETF head of {k} classes needs at least {k} projector channels; "
                           f"-o mamba-fscil.out_channels={cout} is too few")
        with torch.random.fork_rng(devices=[]):  # the projector's initialisation follows the run's seed
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=state.generator)))
            self.projector = DualSelectiveProjector(cin, cout, o.feat_size, o.d_state, o.dt_rank or o.d_state)
        self.projector.to(state.device)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=state.generator))
        self.etf = simplex_etf(orthonormal_basis(cout, k, seed), k).float().to(state.device)  # (cout, K)
        self.n_base = len(exps[0].classes)

    @hookimpl
    def cfs_extra_parameters(self, state: RunState) -> list[nn.Parameter] | None:
        if not state.is_first_experience:
            return None
        return [p for n, p in self.projector.named_parameters() if not n.startswith("new.")]

    def _etf_loss(self, out: torch.Tensor, y: torch.Tensor, with_len: bool) -> torch.Tensor:
        feat = F.normalize(out, dim=1)
        if not with_len:
            return self.options.dr_weight * dot_regression_loss(feat, self.etf[:, y].T)
        target = (self.etf * length_rect(y, self.etf.shape[1])[None, :])[:, y].T
        return self.options.dr_weight * dot_regression_loss(feat, target, target.norm(dim=1))

    def _augment(self, state: RunState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The base session's batch mixup / CutMix / identity (mmcls ``BatchMixup``/``BatchCutMix``)."""
        o, rng = self.options, self._rng(state)
        index = torch.randperm(len(y), generator=state.generator).to(y.device)
        pick = rng.random()
        if pick < o.mixup_prob:
            lam = float(rng.beta(o.mixup_alpha, o.mixup_alpha))
            return lam * x + (1 - lam) * x[index], y[index], lam
        if pick < o.mixup_prob + o.cutmix_prob:
            lam = float(rng.beta(o.cutmix_alpha, o.cutmix_alpha))
            h, w = x.shape[2:]
            ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
            y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x = x.clone()
            x[:, :, y0:y1, x0:x1] = x[index][:, :, y0:y1, x0:x1]
            return x, y[index], 1 - (y1 - y0) * (x1 - x0) / (h * w)
        return x, y, 1.0

    @hookimpl
    def cfs_training_step(self, state: RunState) -> torch.Tensor | None:
        if not state.is_first_experience:
            return None
        x, y = state.batch
        mixed, y_b, lam = self._augment(state, x, y)
        self.projector.train()
        out = self.projector(state.model.backbone.feature_map(mixed))["out"]
        loss = lam * self._etf_loss(out, y, False) + (1 - lam) * self._etf_loss(out, y_b, False) \
            + self._etf_loss(out, y, False)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.outputs = (F.normalize(out.detach(), dim=1) @ self.etf)[:, : state.n_seen]
        return loss.detach()

    def _feature_maps(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        return compute_features(_FeatureMap(state.model.backbone, self.options.feat_size), state.transform, x,
                                state.device)

    @hookimpl
    def cfs_after_training_exp(self, state: RunState) -> None:
        if not state.is_first_experience:
            return
        maps = self._feature_maps(state, state.train_data.x)
        y = state.train_data.y.to(maps.device)
        classes = state.experience.classes
        self.memory_x = torch.stack([maps[y == c].mean(0) for c in classes])
        self.memory_y = torch.tensor(classes, device=maps.device)
        self.projector.add_new_branch()

    @hookimpl
    def cfs_train_experience(self, state: RunState) -> bool | None:
        if state.is_first_experience:
            return None
        o = self.options
        maps = self._feature_maps(state, state.train_data.x)
        y = state.train_data.y.to(maps.device)
        xs, ys = torch.cat([maps, self.memory_x]), torch.cat([y, self.memory_y])
        params = list(self.projector.new.parameters())
        opt = torch.optim.SGD(params, lr=o.lr, momentum=0.9, weight_decay=5e-4)
        self.projector.train()
        n, bs = len(ys), min(o.batch, len(ys))
        order, pos = torch.randperm(n, generator=state.generator), 0
        for step in range(1, o.steps + 1):
            if pos + bs > n:  # drop_last, reshuffle
                order, pos = torch.randperm(n, generator=state.generator), 0
            idx = order[pos : pos + bs].to(xs.device)
            pos += bs
            for group in opt.param_groups:
                group["lr"] = session_lr(step, o.steps, o.lr)
            loss = self._session_loss(state, xs[idx], ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
            opt.step()
            self.session_images += bs
        classes = state.experience.classes
        means = torch.stack([maps[y == c].mean(0) for c in classes])
        self.memory_x = torch.cat([self.memory_x, means])
        self.memory_y = torch.cat([self.memory_y, torch.tensor(classes, device=means.device)])
        return True

    def _session_loss(self, state: RunState, maps: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        o = self.options
        res = self.projector(maps)
        out = res["out"]
        if self._rng(state).random() < o.feat_mixup_prob:  # the code's mixup_feat: lam = alpha = 0.5
            index = torch.randperm(len(y), generator=state.generator).to(y.device)
            mixed = 0.5 * out + 0.5 * out[index]
            loss = 0.5 * self._etf_loss(mixed, y, True) + 0.5 * self._etf_loss(mixed, y[index], True)
        else:
            loss = self._etf_loss(out, y, True)
        is_base = y < self.n_base
        loss = loss + suppression_loss(res["z"], is_base, o.supp_base, o.supp_novel)
        if o.sep_new > 0 and bool(is_base.any()) and bool((~is_base).any()):
            p = res["params"]
            loss = loss + o.sep_new * (separation_loss(p.dt, is_base) + separation_loss(p.B, is_base)
                                       + separation_loss(p.C, is_base))
        return loss

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        maps = run_cache(state).prepared(_FeatureMap(state.model.backbone, self.options.feat_size), x)
        self.projector.eval()
        out = self.projector(maps)["out"]
        return F.normalize(out, dim=1) @ self.etf[:, : state.n_seen]

    def state_dict(self) -> dict[str, Any]:
        return {"projector": None if self.projector is None else self.projector.state_dict(),
                "has_new": self.projector is not None and self.projector.new is not None,
                "args": None if self.projector is None else self.projector.args,
                "etf": self.etf, "n_base": self.n_base, "memory_x": self.memory_x, "memory_y": self.memory_y,
                "session_images": self.session_images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.etf, self.n_base = state["etf"], state["n_base"]
        self.memory_x, self.memory_y = state["memory_x"], state["memory_y"]
        self.session_images = state.get("session_images", 0)
        if state["projector"] is not None:
            self.projector = DualSelectiveProjector(*state["args"])
            if state["has_new"]:
                self.projector.add_new_branch()
            self.projector.load_state_dict(state["projector"])


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(MambaFscil)
