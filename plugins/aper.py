"""APER (Zhou et al., IJCV 2024, "Revisiting class-incremental learning with pre-trained
models: generalizability and adaptivity are all you need").

On the first task only the pre-trained model is adapted; then it is frozen, every class's
prototype is the mean of the concatenation ``[phi_PTM(x); phi_adapted(x)]`` and prediction is
cosine similarity to the prototypes (as SimpleCIL, on the concatenated representation).

``-o aper.variant``, default by backbone family (:func:`cfs.models.peft.backbone_family`):

* ``bn`` (default for CNNs, e.g. EfficientNet-Lite, ResNet) [CODE, ``models/aper_bn.py``]: a
  copy of the backbone has its BatchNorm running statistics zeroed and re-estimated by
  ``epochs`` forward passes in train mode over the first task's augmented training images,
  batch 128, no gradients, no affine training. Departure: cumulative instead of momentum-0.1
  average (see :mod:`cfs.models.peft`).
* ``ssf`` [CODE, ``models/aper_ssf.py``]: a copy of the backbone gets per-channel scale/shift
  after its BatchNorm layers (after Conv/Linear/LayerNorm when it has none), trained with the
  rest frozen, with CE through a cosine classifier over the first task's classes (learnable
  scale, as the official ``SimpleCosineIncrementalNet``), on augmented images, the network in
  train mode (so BN statistics follow the data, as in the official loop): SGD momentum 0.9,
  lr 0.01, weight decay 5e-4, batch 128 (the official CNN batch), cosine schedule to 1e-8.
* ``adapter`` (default for ViTs) [CODE, ``models/adam_adapter.py``]: on a ViT, AdaptFormer
  adapters (bottleneck 64, scale 0.1) parallel to the MLP of every block
  (:func:`cfs.models.peft.adaptformer`), trained like SSF (cosine head, augmented images)
  with batch 48 and a cosine schedule to 0. On a backbone without transformer blocks (the
  MLP of the tests; default there too) the adapter sits on the pooled features beside a
  linear head and trains on cached features: a departure kept for backbones that offer
  nothing else, and one that barely moves the features (METHODS.md 11.6).

``epochs`` is the official ``tuned_epoch`` (20 in the ViT configs; the CNN configs were not
checked, 20 is used for every variant).
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
from cfs.models.adapters import FeatureAdapter, train_on_features
from cfs.models.peft import adaptformer, backbone_family, bn_adapt, estimate_bn, ssf
from cfs.prototype_strategy import PrototypeStrategy
from cfs.registry import Registry

VARIANTS = ("auto", "adapter", "bn", "ssf")


@dataclass
class AperOptions:
    variant: str = "auto"  # auto: bn for CNNs, adapter otherwise (in-block AdaptFormer on ViTs)
    adapter_dim: int = 64
    adapter_scale: float = 0.1
    epochs: int = 20
    lr: float = 0.01
    batch_size: int = 0  # 0: the official batch of the variant (48 adapter, 128 bn/ssf)
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.epochs < 0 or self.batch_size < 0:
            raise ValueError("epochs and batch_size must be >= 0")


class CosineClassifier(nn.Module):
    """``sigma * cos(f, w_c)`` with a learnable ``sigma`` (starts at 1, as the official CosineLinear)."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, dim).uniform_(-dim**-0.5, dim**-0.5))
        self.sigma = nn.Parameter(torch.ones(1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.sigma * F.normalize(f, dim=1) @ F.normalize(self.weight, dim=1).T


class Aper(PrototypeStrategy):
    """APER: adapt the pre-trained model on the first task (BN / SSF / adapter), then prototypes of [PTM; adapted]."""

    name = "aper"
    compatibility = frozenset({"class-incremental", "fscil"})
    Options = AperOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.adapter: FeatureAdapter | None = None  # variant "adapter"
        self.adapted: nn.Module | None = None  # variants "bn" / "ssf": the adapted backbone copy
        self.variant: str | None = None
        self._pending: dict[str, torch.Tensor] | None = None  # adapted weights loaded before a backbone was seen
        self.history: list[float] = []

    # -- representation -----------------------------------------------------------------
    def resolve_variant(self, backbone: nn.Module) -> str:
        if self.options.variant != "auto":
            return self.options.variant
        return "bn" if backbone_family(backbone) == "cnn" else "adapter"

    def _copy(self, state: RunState, variant: str) -> tuple[nn.Module, list[nn.Parameter]]:
        net = copy.deepcopy(state.model.backbone).to(state.device)
        o = self.options
        try:
            if variant == "adapter":
                params = adaptformer(net, o.adapter_dim, o.adapter_scale)
            else:
                params = ssf(net) if variant == "ssf" else bn_adapt(net)
        except ValueError as e:
            raise CfsError(f"aper: variant {variant!r} does not fit this backbone: {e}") from None
        return net, params

    def _ensure_adapted(self, state: RunState) -> None:
        if self._pending is not None and self.adapted is None:
            self.adapted, _ = self._copy(state, self.variant)
            self.adapted.load_state_dict(self._pending)
            self.adapted.requires_grad_(False).eval()
            self._pending = None

    def embed_train(self, state: RunState) -> torch.Tensor:
        feats = super().embed_train(state)
        if self.variant is None:
            self.variant = self.resolve_variant(state.model.backbone)
            if self.variant == "adapter" and backbone_family(state.model.backbone) != "vit":
                self.adapter = self.fit_adapter(state, feats, state.train_data.y.to(feats.device))
            else:
                self.adapted = self.fit_backbone(state)
        return torch.cat([feats, self.second(state, state.train_data.x, feats, raw=True)], dim=1)

    def embed(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        feats = super().embed(state, x)
        return torch.cat([feats, self.second(state, x, feats, raw=False)], dim=1)

    @torch.no_grad()
    def second(self, state: RunState, x: torch.Tensor, feats: torch.Tensor, raw: bool) -> torch.Tensor:
        """The adapted branch's features (``raw``: untransformed training images)."""
        if self.adapter is not None:  # the pooled adapter
            return self.adapter(feats)
        self._ensure_adapted(state)
        cache = run_cache(state)
        if raw:
            return cache.features(self.adapted, state.transform, x, state.device)
        return cache.prepared(self.adapted, x)

    # -- first-task adaptation ----------------------------------------------------------
    def _batches(self, state: RunState, bs: int):
        x, y = state.train_data.x, state.train_data.y
        order = torch.randperm(len(x), generator=state.generator)
        for start in range(0, len(x), bs):
            idx = order[start : start + bs]
            if len(idx) < 2:  # train-mode BatchNorm needs two samples
                continue
            yield state.transform(x[idx].to(state.device), train=True, generator=state.generator), y[idx].to(state.device)

    def fit_backbone(self, state: RunState) -> nn.Module:
        """BN: re-estimate the statistics; SSF / AdaptFormer: train them with a cosine head (module doc)."""
        o = self.options
        bs = o.batch_size or (48 if self.variant == "adapter" else 128)
        net, params = self._copy(state, self.variant)
        if self.variant == "bn":
            for _ in range(o.epochs):
                estimate_bn(net, (xb for xb, _ in self._batches(state, bs)))
        else:
            classes = list(state.experience.classes)
            remap = torch.full((max(classes) + 1,), -1, dtype=torch.long, device=state.device)
            remap[torch.tensor(classes, device=state.device)] = torch.arange(len(classes), device=state.device)
            head = CosineClassifier(net.out_dim, len(classes)).to(state.device)
            opt = torch.optim.SGD(params + list(head.parameters()), lr=o.lr, momentum=o.momentum,
                                  weight_decay=o.weight_decay)
            eta_min = 0.0 if self.variant == "adapter" else 1e-8  # official min_lr of each script
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(o.epochs, 1), eta_min=eta_min)
            with torch.enable_grad():
                for _ in range(o.epochs):
                    net.train()
                    total, n = 0.0, 0
                    for xb, yb in self._batches(state, bs):
                        loss = F.cross_entropy(head(net(xb)), remap[yb])
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        total, n = total + float(loss.detach()) * len(yb), n + len(yb)
                    sched.step()
                    self.history.append(total / max(n, 1))
        return net.requires_grad_(False).eval()

    def fit_adapter(self, state: RunState, feats: torch.Tensor, labels: torch.Tensor) -> FeatureAdapter:
        """Train the pooled adapter and a throw-away linear head with CE on the first task."""
        o = self.options
        adapter = FeatureAdapter(feats.shape[1], o.adapter_dim, o.adapter_scale).to(feats.device)
        head = nn.Linear(feats.shape[1], state.n_seen).to(feats.device)

        def loss(fb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(head(adapter(fb)), yb)

        with torch.enable_grad():
            self.history = train_on_features(
                list(adapter.parameters()) + list(head.parameters()), loss, feats, labels, epochs=o.epochs,
                lr=o.lr, batch_size=o.batch_size or 48, momentum=o.momentum, weight_decay=o.weight_decay,
                generator=state.generator)
        adapter.requires_grad_(False).eval()
        return adapter

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        adapted = self._pending if self.adapted is None else {k: v.cpu() for k, v in self.adapted.state_dict().items()}
        return {**super().state_dict(), "variant": self.variant,
                "adapter": None if self.adapter is None else {k: v.cpu() for k, v in self.adapter.state_dict().items()},
                "adapted": adapted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.variant = state.get("variant", "adapter" if state.get("adapter") is not None else None)
        if state.get("adapter") is not None:
            w = state["adapter"]
            self.adapter = FeatureAdapter(w["up.weight"].shape[0], w["down.weight"].shape[0], self.options.adapter_scale)
            self.adapter.load_state_dict(w)
            self.adapter.requires_grad_(False).eval()
        self.adapted, self._pending = None, state.get("adapted")  # rebuilt on the backbone at first use


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Aper)
