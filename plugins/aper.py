"""APER, adapter variant (Zhou et al., IJCV 2024, "Revisiting class-incremental learning with
pre-trained models: generalizability and adaptivity are all you need").

[CODE, RevisitingCIL] On the first task only, an AdaptFormer bottleneck adapter (64 units,
scale 0.1) is trained with cross-entropy (SGD lr 0.01, momentum 0.9, weight decay 5e-4,
batch 48, 20 epochs, cosine schedule to 0) through a temporary linear head over that task's
classes; then it is frozen. Every class's prototype is the mean of the concatenated
representation ``[f(x); adapter(f(x))]`` and prediction is cosine similarity to prototypes.

Difference from the paper: the adapter sits on the backbone's pooled features instead of in
parallel to the MLP of every ViT block (cfs.models.adapters explains why): it works for any
backbone, CNNs included, and trains on cached features, so an epoch costs a head's forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.models.adapters import FeatureAdapter, train_on_features
from cfs.prototype_strategy import PrototypeStrategy
from cfs.registry import Registry


@dataclass
class AperOptions:
    adapter_dim: int = 64
    adapter_scale: float = 0.1
    epochs: int = 20
    lr: float = 0.01
    batch_size: int = 48
    momentum: float = 0.9
    weight_decay: float = 5e-4


class Aper(PrototypeStrategy):
    """APER (adapter): adapt the pre-trained model on the first task, then prototypes of [PTM; adapted]."""

    name = "aper"
    compatibility = frozenset({"class-incremental", "fscil"})
    Options = AperOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.adapter: FeatureAdapter | None = None
        self.history: list[float] = []

    def represent(self, feats: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([feats, self.adapter(feats)], dim=1)

    def embed_train(self, state: RunState) -> torch.Tensor:
        feats = super().embed_train(state)
        if self.adapter is None:
            self.adapter = self.fit_adapter(state, feats, state.train_data.y.to(feats.device))
        return self.represent(feats)

    def embed(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        return self.represent(super().embed(state, x))

    def fit_adapter(self, state: RunState, feats: torch.Tensor, labels: torch.Tensor) -> FeatureAdapter:
        """Train the adapter and a throw-away linear head with CE on the first task."""
        o = self.options
        adapter = FeatureAdapter(feats.shape[1], o.adapter_dim, o.adapter_scale).to(feats.device)
        head = nn.Linear(feats.shape[1], state.n_seen).to(feats.device)

        def loss(fb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(head(adapter(fb)), yb)

        with torch.enable_grad():
            self.history = train_on_features(
                list(adapter.parameters()) + list(head.parameters()), loss, feats, labels, epochs=o.epochs,
                lr=o.lr, batch_size=o.batch_size, momentum=o.momentum, weight_decay=o.weight_decay,
                generator=state.generator)
        adapter.requires_grad_(False).eval()
        return adapter

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "adapter": None if self.adapter is None else {k: v.cpu() for k, v in self.adapter.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("adapter") is not None:
            w = state["adapter"]
            self.adapter = FeatureAdapter(w["up.weight"].shape[0], w["down.weight"].shape[0], self.options.adapter_scale)
            self.adapter.load_state_dict(w)
            self.adapter.requires_grad_(False).eval()


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Aper)
