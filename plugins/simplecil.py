"""SimpleCIL (Zhou et al., IJCV 2024, "Revisiting class-incremental learning with pre-trained
models"): class means of a frozen pre-trained backbone's features, cosine classification.

[CODE, RevisitingCIL] For each arriving class the prototype is the mean feature of its training
images under the test transform; prediction is the largest cosine similarity to a prototype.
Nothing is trained, so there is no forgetting beyond what the frozen features imply. Features
come from the run's feature cache (:mod:`cfs.features`), so each image is embedded once.
Use it with a pre-trained backbone, e.g. ``--backbone efficientnet-lite0`` or
``--backbone timm:vit_base_patch16_224 --pretrained``.
"""

from __future__ import annotations

from typing import Any

import torch

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.features import cached_features, run_cache
from cfs.models.prototypes import PrototypeBank, class_means
from cfs.registry import Registry
from cfs.strategy import Strategy


class SimpleCIL(Strategy):
    """Prototype classifier on a frozen pre-trained backbone (training-free)."""

    name = "simplecil"
    compatibility = frozenset({"class-incremental", "fscil"})

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.bank = PrototypeBank()

    def embed_train(self, state: RunState) -> torch.Tensor:
        """Frozen features of the experience's training images (cached)."""
        return cached_features(state, state.train_data.x)

    def embed(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        """Features of a normalised evaluation batch (cached across evaluations)."""
        return run_cache(state).prepared(state.model.backbone, x)

    @hookimpl
    def cfs_train_experience(self, state: RunState) -> bool:
        feats = self.embed_train(state)
        classes = state.experience.classes
        self.bank.set(classes, class_means(feats, state.train_data.y.to(feats.device), classes))
        return True

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        return self.bank.scores(self.embed(state, x))

    def state_dict(self) -> dict[str, Any]:
        return self.bank.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bank.load_state_dict(state)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(SimpleCIL)
