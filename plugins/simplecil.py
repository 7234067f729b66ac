"""SimpleCIL (Zhou et al., IJCV 2024, "Revisiting class-incremental learning with pre-trained
models"): class means of a frozen pre-trained backbone's features, cosine classification.

[CODE, RevisitingCIL] For each arriving class the prototype is the mean feature of its training
images under the test transform; prediction is the largest cosine similarity to a prototype.
Nothing is trained, so there is no forgetting beyond what the frozen features imply. Features
come from the run's feature cache (:mod:`cfs.features`), so each image is embedded once. The
method is exactly :class:`cfs.prototype_strategy.PrototypeStrategy`, which APER extends too.
Use it with a pre-trained backbone, e.g. ``--backbone efficientnet-lite0`` or
``--backbone timm:vit_base_patch16_224 --pretrained``.
"""

from __future__ import annotations

from cfs import hookimpl
from cfs.prototype_strategy import PrototypeStrategy
from cfs.registry import Registry


class SimpleCIL(PrototypeStrategy):
    """Prototype classifier on a frozen pre-trained backbone (training-free)."""

    name = "simplecil"
    compatibility = frozenset({"class-incremental", "fscil"})


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(SimpleCIL)
