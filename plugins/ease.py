"""EASE (Zhou, Sun, Ye, Zhan; CVPR 2024, "Expandable subspace ensemble for pre-trained model-based
class-incremental learning").

Facts from the official code (github:sun-hailong/CVPR24-EASE, also ``models/ease.py`` and
``exps/ease.json`` of github:sun-hailong/LAMDA-PILOT), re-implemented here:

* One **subspace per experience**: a new set of AdaptFormer adapters (bottleneck 64, scale 0.1,
  parallel to the MLP of every block) on the frozen pre-trained ViT, trained on that
  experience alone with cross-entropy over *its own classes* through a throw-away cosine
  classifier, then frozen. Core mechanism: :class:`cfs.models.peft.AdapterSets` (several adapter
  sets on one ViT, one active per forward pass) on a frozen copy of the run's backbone.
  Training: SGD momentum 0.9, lr 0.025, weight decay 5e-4, batch 48, cosine schedule to 0, 20
  epochs per experience (``init_epochs``/``later_epochs``), augmented images, train mode.
* The representation of an image is the **concatenation** of its features in every subspace
  (the class-token output with adapter set k active, k = 0..t); the PTM's own features are
  not used (``use_init_ptm`` false).
* **Prototypes**: after experience t, every class of t gets, in every subspace k <= t, the mean
  feature of its training images (test transform, eval mode) in that subspace.
* **Semantic-guided prototype complement** (``recalc_sim``, the official default): an old class
  of experience i has no real prototype in a later subspace j (its data are gone). For every
  pair i < j <= t, with A the prototypes in subspace i of the classes that arrived from
  experience j on, B the prototypes of the same classes in subspace j, and A_hat the prototypes
  of experience i's classes in subspace i: S = softmax_row(cos(A_hat, A)) and experience i's
  prototypes in subspace j become S B (recomputed after every experience, as more real classes
  arrive).
* **Prediction** (``use_reweight``): the score of a class of experience i is the sum over
  subspaces k of cos(f_k(x), p_c,k), each subspace k != i weighted ``alpha / t`` (alpha = 0.1;
  its own subspace weight 1; t the index of the latest experience).

Departures, stated: epochs (``-o ease.epochs``) default to the official 20; CPU benchmarks set
fewer. The throw-away classifier is :class:`cfs.first_task_adaptation.CosineClassifier`
(learnable scale, as the official ``CosineLinear``). Every subspace's features of a batch
are read through the run's feature cache, so an evaluation image goes through subspace k once
per run, not once per evaluation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.features import run_cache
from cfs.first_task_adaptation import CosineClassifier
from cfs.models.peft import AdapterSets, backbone_family
from cfs.models.prototypes import class_means
from cfs.registry import Registry
from cfs.strategy import Strategy


@dataclass
class EaseOptions:
    adapter_dim: int = 64
    adapter_scale: float = 0.1
    epochs: int = 20
    lr: float = 0.025
    batch_size: int = 48
    momentum: float = 0.9
    weight_decay: float = 5e-4
    alpha: float = 0.1  # weight of the other subspaces' scores (divided by the experience index)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 2 or self.adapter_dim < 1:
            raise ValueError("epochs must be >= 0, batch_size >= 2 and adapter_dim >= 1")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")


class Subspace(nn.Module):
    """The adapted ViT with adapter set ``index`` active: a module of its own, so the feature
    cache keys its features by the index (a buffer) as well as by the weights."""

    def __init__(self, net: nn.Module, sets: AdapterSets, index: int) -> None:
        super().__init__()
        self.net = net
        object.__setattr__(self, "sets", sets)
        self.register_buffer("index", torch.tensor(index))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sets.use(int(self.index))
        return self.net(x)


def complement(protos: torch.Tensor, tasks: list[list[int]]) -> torch.Tensor:
    """EASE's semantic-guided prototype complement (``solve_sim_reset``), out of place.

    ``protos`` (n_classes, n_subspaces, d): real prototypes of experience k's classes in
    subspaces 0..k. Fills experience i's rows in every later subspace j with
    softmax(cos(A_hat, A)) B (module docstring)."""
    out = protos.clone()
    t = len(tasks) - 1
    for i in range(t):
        old = torch.as_tensor(tasks[i], device=protos.device)
        for j in range(i + 1, t + 1):
            later = torch.as_tensor([c for k in range(j, t + 1) for c in tasks[k]], device=protos.device)
            a, b, a_hat = protos[later, i], protos[later, j], protos[old, i]
            sim = torch.softmax(F.normalize(a_hat, dim=1) @ F.normalize(a, dim=1).T, dim=1)
            out[old, j] = sim @ b
    return out


def reweighted_scores(feats: torch.Tensor, protos: torch.Tensor, tasks: list[list[int]], alpha: float) -> torch.Tensor:
    """(B, n_classes) scores: sum over subspaces k of cos(f_k, p_c,k), weight 1 for the class's
    own experience's subspace and ``alpha / t`` for the others. ``feats``: (B, n_subspaces, d)."""
    t = len(tasks) - 1
    cos = torch.einsum("bkd,ckd->bck", F.normalize(feats, dim=2), F.normalize(protos, dim=2))  # (B, C, K)
    weights = torch.full(protos.shape[:2], alpha / max(t, 1), device=feats.device, dtype=feats.dtype)
    for i, classes in enumerate(tasks):
        weights[torch.as_tensor(classes, device=feats.device), i] = 1.0
    return (cos * weights.unsqueeze(0)).sum(2)


class Ease(Strategy):
    """EASE: one adapter subspace per experience, concatenated, with prototype complement for old classes."""

    name = "ease"
    compatibility = frozenset({"class-incremental"})
    backbone_family = "vit"  # cfs bench refuses another backbone before any work
    Options = EaseOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.net: nn.Module | None = None  # frozen copy of the backbone carrying the adapter sets
        self.sets: AdapterSets | None = None
        self.tasks: list[list[int]] = []
        self.protos: torch.Tensor | None = None  # (n_classes, n_subspaces, d), real + complemented
        self.real: torch.Tensor | None = None  # the same, real prototypes only (zeros elsewhere)
        self.history: list[float] = []
        self._pending_net: dict[str, torch.Tensor] | None = None  # adapter weights loaded before a backbone

    # -- subspaces -----------------------------------------------------------------------------
    def _setup(self, state: RunState) -> None:
        if backbone_family(state.model.backbone) != "vit":
            raise CfsError("ease needs a ViT backbone (adapters go inside its blocks): use --backbone vit-tiny "
                           "--weights PATH or timm:vit_base_patch16_224 --pretrained")
        self.net = copy.deepcopy(state.model.backbone).to(state.device).eval()
        self.sets = AdapterSets(self.net, self.options.adapter_dim, self.options.adapter_scale)

    def _restore(self, state: RunState) -> None:
        """After a resume: rebuild the adapter sets on the run's backbone and load their weights."""
        if self._pending_net is not None and self.net is None:
            self._setup(state)
            for _ in self.tasks:
                self.sets.add()
            self.net.load_state_dict(self._pending_net)
            self.net.requires_grad_(False).eval()
            self._pending_net = None

    def subspace(self, k: int) -> Subspace:
        return Subspace(self.net, self.sets, k)

    def _train_subspace(self, state: RunState) -> None:
        """A new adapter set trained with CE over the experience's classes (module docstring)."""
        o = self.options
        params = self.sets.add()
        classes = list(state.experience.classes)
        remap = torch.full((max(classes) + 1,), -1, dtype=torch.long, device=state.device)
        remap[torch.tensor(classes, device=state.device)] = torch.arange(len(classes), device=state.device)
        head = CosineClassifier(self.net.out_dim, len(classes)).to(state.device)
        opt = torch.optim.SGD(params + list(head.parameters()), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(o.epochs, 1), eta_min=0.0)
        x_all, y_all = state.train_data.x, state.train_data.y
        with torch.enable_grad():
            for _ in range(o.epochs):
                self.net.train()
                order = torch.randperm(len(x_all), generator=state.generator)
                total, n = 0.0, 0
                for s in range(0, len(order), o.batch_size):
                    idx = order[s : s + o.batch_size]
                    xb = state.transform(x_all[idx].to(state.device), train=True, generator=state.generator)
                    yb = remap[y_all[idx].to(state.device)]
                    loss = F.cross_entropy(head(self.net(xb)), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total, n = total + float(loss.detach()) * len(idx), n + len(idx)
                sched.step()
                self.history.append(total / max(n, 1))
        self.net.requires_grad_(False).eval()

    # -- learning ------------------------------------------------------------------------------
    @hookimpl
    def cfs_train_experience(self, state: RunState) -> bool:
        self._restore(state)
        if self.net is None:
            self._setup(state)
        self._train_subspace(state)
        classes = list(state.experience.classes)
        self.tasks.append(classes)
        t = len(self.tasks) - 1
        cache = run_cache(state)
        labels = state.train_data.y.to(state.device)
        means = [class_means(cache.features(self.subspace(k), state.transform, state.train_data.x, state.device),
                             labels, classes) for k in range(t + 1)]
        n_classes = max(max(c) for c in self.tasks) + 1
        d = means[0].shape[1]
        real = torch.zeros(n_classes, t + 1, d, device=state.device)
        if self.real is not None:
            real[: self.real.shape[0], : self.real.shape[1]] = self.real
        idx = torch.as_tensor(classes, device=state.device)
        for k, m in enumerate(means):
            real[idx, k] = m
        self.real = real
        self.protos = complement(real, self.tasks)
        return True

    def features(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        """(B, n_subspaces, d): the batch's features in every subspace (cached per batch and subspace)."""
        cache = run_cache(state)
        return torch.stack([cache.prepared(self.subspace(k), x) for k in range(len(self.tasks))], dim=1)

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        self._restore(state)
        return reweighted_scores(self.features(state, x), self.protos.to(x.device), self.tasks, self.options.alpha)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"tasks": [list(c) for c in self.tasks], "history": list(self.history),
                "real": None if self.real is None else self.real.cpu(),
                "protos": None if self.protos is None else self.protos.cpu(),
                "net": None if self.net is None else {k: v.cpu() for k, v in self.net.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tasks = [list(c) for c in state["tasks"]]
        self.history = list(state["history"])
        self.real, self.protos = state["real"], state["protos"]
        self._pending_net = state["net"]


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Ease)
