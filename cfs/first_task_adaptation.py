"""Adapt a copy of a frozen pre-trained backbone on the first task, then freeze it.

APER (Zhou et al., IJCV 2024) and NCPTM-CIL (He et al., 2025; METHODS.md 1.2) share one idea:
the pre-trained model generalises, one cheap adaptation on the first task makes it fit the
target domain, and everything after the first task reads features of the frozen adapted copy.
This module is that mechanism, once, for every method that needs it (the core imports no
plugin; the plugins call :class:`FirstTaskAdaptation`).

Variants (``variant``; ``auto`` picks by :func:`cfs.models.peft.backbone_family`: ``bn`` for
CNNs, ``adapter`` otherwise), following the official APER code (github:zhoudw-zdw/RevisitingCIL):

* ``bn`` (``models/aper_bn.py``): BatchNorm running statistics zeroed and re-estimated by
  ``epochs`` passes in train mode over the first task's augmented images, batch 128, no
  gradients, no affine training (:func:`cfs.models.peft.bn_adapt`, ``estimate_bn``).
* ``ssf`` (``models/aper_ssf.py``): per-channel scale and shift (:func:`cfs.models.peft.ssf`)
  trained with the rest frozen, CE through a cosine classifier over the first task's classes
  (learnable scale, as the official ``SimpleCosineIncrementalNet``), on augmented images, the
  network in train mode: SGD momentum 0.9, lr 0.01, weight decay 5e-4, batch 128, cosine
  schedule to 1e-8.
* ``adapter`` on a ViT (``models/adam_adapter.py``): AdaptFormer adapters (bottleneck 64, scale
  0.1) parallel to the MLP of every block (:func:`cfs.models.peft.adaptformer`), trained as SSF
  with batch 48 and a cosine schedule to 0.
* ``adapter`` on anything else (the tests' MLP): a bottleneck adapter on the pooled feature,
  trained with a throw-away linear head on cached features (:class:`cfs.models.adapters.FeatureAdapter`).
  A departure kept for backbones that offer nothing else; it barely moves the features
  (METHODS.md 11.6).

``epochs`` is the official ``tuned_epoch`` (20 in the ViT configs; 20 is used for every variant).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cfs.errors import CfsError
from cfs.features import cached_features, run_cache
from cfs.models.adapters import FeatureAdapter, train_on_features
from cfs.models.peft import adaptformer, backbone_family, bn_adapt, estimate_bn, ssf

VARIANTS = ("auto", "adapter", "bn", "ssf")


@dataclass
class AdaptationOptions:
    """Settings of the first-task adaptation (defaults: the official APER ones)."""

    variant: str = "auto"
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


class FirstTaskAdaptation:
    """A frozen adapted representation, fitted once on the first experience it sees.

    Call :meth:`train_features` with the experience's training images (it fits on the first
    call) and :meth:`features` for evaluation batches; both return the *adapted* features
    only (a method that wants ``[PTM; adapted]`` concatenates them itself)."""

    def __init__(self, options: AdaptationOptions) -> None:
        self.options = options
        self.variant: str | None = None
        self.pooled: FeatureAdapter | None = None  # ``adapter`` on a backbone without blocks
        self.adapted: nn.Module | None = None  # bn / ssf / in-block adapter: the adapted copy
        self._pending: dict[str, torch.Tensor] | None = None  # weights loaded before a backbone was seen
        self.history: list[float] = []  # mean training loss per epoch (ssf / adapter)

    @property
    def fitted(self) -> bool:
        return self.variant is not None

    def resolve_variant(self, backbone: nn.Module) -> str:
        if self.options.variant != "auto":
            return self.options.variant
        return "bn" if backbone_family(backbone) == "cnn" else "adapter"

    def _uses_pooled(self, backbone: nn.Module) -> bool:
        return self.variant == "adapter" and backbone_family(backbone) != "vit"

    # -- features ----------------------------------------------------------------------------
    @torch.no_grad()
    def train_features(self, state: Any, ptm_features: torch.Tensor | None = None) -> torch.Tensor:
        """Adapted features of the experience's (untransformed) training images; fits first if needed."""
        if ptm_features is None:
            ptm_features = cached_features(state, state.train_data.x)
        if not self.fitted:
            self.fit(state, ptm_features)
        if self.pooled is not None:
            return self.pooled(ptm_features)
        self._rebuild(state)
        return run_cache(state).features(self.adapted, state.transform, state.train_data.x, state.device)

    @torch.no_grad()
    def features(self, state: Any, x: torch.Tensor, ptm_features: torch.Tensor | None = None) -> torch.Tensor:
        """Adapted features of an already transformed evaluation batch."""
        if self.pooled is not None:
            if ptm_features is None:
                ptm_features = run_cache(state).prepared(state.model.backbone, x)
            return self.pooled(ptm_features)
        self._rebuild(state)
        return run_cache(state).prepared(self.adapted, x)

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, state: Any, ptm_features: torch.Tensor) -> None:
        """Adapt on the current experience (the first one) and freeze."""
        self.variant = self.resolve_variant(state.model.backbone)
        with torch.enable_grad():
            if self._uses_pooled(state.model.backbone):
                self.pooled = self._fit_pooled(state, ptm_features, state.train_data.y.to(ptm_features.device))
            else:
                self.adapted = self._fit_copy(state)

    def _copy(self, state: Any) -> tuple[nn.Module, list[nn.Parameter]]:
        net = copy.deepcopy(state.model.backbone).to(state.device)
        o = self.options
        try:
            if self.variant == "adapter":
                params = adaptformer(net, o.adapter_dim, o.adapter_scale)
            else:
                params = ssf(net) if self.variant == "ssf" else bn_adapt(net)
        except ValueError as e:
            raise CfsError(f"first-task adaptation: variant {self.variant!r} does not fit this backbone: {e}") from None
        return net, params

    def _batches(self, state: Any, bs: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = state.train_data.x, state.train_data.y
        order = torch.randperm(len(x), generator=state.generator)
        for start in range(0, len(x), bs):
            idx = order[start : start + bs]
            if len(idx) < 2:  # train-mode BatchNorm needs two samples
                continue
            yield (state.transform(x[idx].to(state.device), train=True, generator=state.generator),
                   y[idx].to(state.device))

    def _fit_copy(self, state: Any) -> nn.Module:
        """BN: re-estimate the statistics; SSF / AdaptFormer: train them with a cosine head."""
        o = self.options
        bs = o.batch_size or (48 if self.variant == "adapter" else 128)
        net, params = self._copy(state)
        if self.variant == "bn":
            for _ in range(o.epochs):
                estimate_bn(net, (xb for xb, _ in self._batches(state, bs)))
            return net.requires_grad_(False).eval()
        classes = list(state.experience.classes)
        remap = torch.full((max(classes) + 1,), -1, dtype=torch.long, device=state.device)
        remap[torch.tensor(classes, device=state.device)] = torch.arange(len(classes), device=state.device)
        head = CosineClassifier(net.out_dim, len(classes)).to(state.device)
        opt = torch.optim.SGD(params + list(head.parameters()), lr=o.lr, momentum=o.momentum,
                              weight_decay=o.weight_decay)
        eta_min = 0.0 if self.variant == "adapter" else 1e-8  # official min_lr of each script
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(o.epochs, 1), eta_min=eta_min)
        for _ in range(o.epochs):
            net.train()
            total, n = torch.zeros((), device=state.device), 0
            for xb, yb in self._batches(state, bs):
                loss = F.cross_entropy(head(net(xb)), remap[yb])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, n = total + loss.detach() * len(yb), n + len(yb)
            sched.step()
            self.history.append(float(total) / max(n, 1))
        return net.requires_grad_(False).eval()

    def _fit_pooled(self, state: Any, feats: torch.Tensor, labels: torch.Tensor) -> FeatureAdapter:
        """Train the pooled adapter and a throw-away linear head with CE on the first task."""
        o = self.options
        adapter = FeatureAdapter(feats.shape[1], o.adapter_dim, o.adapter_scale).to(feats.device)
        head = nn.Linear(feats.shape[1], state.n_seen).to(feats.device)

        def loss(fb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(head(adapter(fb)), yb)

        self.history = train_on_features(
            list(adapter.parameters()) + list(head.parameters()), loss, feats, labels, epochs=o.epochs,
            lr=o.lr, batch_size=o.batch_size or 48, momentum=o.momentum, weight_decay=o.weight_decay,
            generator=state.generator)
        return adapter.requires_grad_(False).eval()

    # -- state -------------------------------------------------------------------------------
    def _rebuild(self, state: Any) -> None:
        """After a resume: rebuild the adapted copy on the run's backbone and load its weights."""
        if self._pending is not None and self.adapted is None:
            self.adapted, _ = self._copy(state)
            self.adapted.load_state_dict(self._pending)
            self.adapted.requires_grad_(False).eval()
            self._pending = None

    def state_dict(self) -> dict[str, Any]:
        def cpu(m: nn.Module) -> dict[str, torch.Tensor]:
            return {k: v.cpu() for k, v in m.state_dict().items()}

        return {"variant": self.variant, "history": list(self.history),
                "adapter": None if self.pooled is None else cpu(self.pooled),
                "adapted": self._pending if self.adapted is None else cpu(self.adapted)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.variant = state.get("variant", "adapter" if state.get("adapter") is not None else None)
        self.history = list(state.get("history", []))
        self.pooled = None
        if state.get("adapter") is not None:
            w = state["adapter"]
            self.pooled = FeatureAdapter(w["up.weight"].shape[0], w["down.weight"].shape[0], self.options.adapter_scale)
            self.pooled.load_state_dict(w)
            self.pooled.requires_grad_(False).eval()
        self.adapted, self._pending = None, state.get("adapted")
