"""APER (Zhou et al., IJCV 2024, "Revisiting class-incremental learning with pre-trained
models: generalizability and adaptivity are all you need").

On the first task only the pre-trained model is adapted; then it is frozen, every class's
prototype is the mean of the concatenation ``[phi_PTM(x); phi_adapted(x)]`` and prediction is
cosine similarity to the prototypes (as SimpleCIL, on the concatenated representation).

The first-task adaptation is the core's :class:`cfs.first_task_adaptation.FirstTaskAdaptation`
(shared with NCPTM-CIL); ``-o aper.variant``, default by backbone family
(:func:`cfs.models.peft.backbone_family`):

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

from dataclasses import asdict, dataclass
from typing import Any

import torch

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.first_task_adaptation import AdaptationOptions, FirstTaskAdaptation
from cfs.prototype_strategy import PrototypeStrategy
from cfs.registry import Registry


@dataclass
class AperOptions(AdaptationOptions):
    """The first-task adaptation's options (``variant`` auto: bn for CNNs, adapter otherwise)."""


class Aper(PrototypeStrategy):
    """APER: adapt the pre-trained model on the first task (BN / SSF / adapter), then prototypes of [PTM; adapted]."""

    name = "aper"
    compatibility = frozenset({"class-incremental", "fscil"})
    Options = AperOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.adaptation = FirstTaskAdaptation(AdaptationOptions(**asdict(self.options)))

    @property
    def variant(self) -> str | None:
        return self.adaptation.variant

    @property
    def history(self) -> list[float]:
        return self.adaptation.history

    @property
    def adapter(self):
        """The pooled adapter (variant ``adapter`` on a backbone without transformer blocks)."""
        return self.adaptation.pooled

    @property
    def adapted(self):
        """The adapted backbone copy (bn / ssf / in-block adapter)."""
        return self.adaptation.adapted

    def embed_train(self, state: RunState) -> torch.Tensor:
        feats = super().embed_train(state)
        return torch.cat([feats, self.adaptation.train_features(state, feats)], dim=1)

    def embed(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        feats = super().embed(state, x)
        return torch.cat([feats, self.adaptation.features(state, x, feats)], dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "adaptation": self.adaptation.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.adaptation.load_state_dict(state["adaptation"])


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Aper)
