"""The prototype baseline of few-shot class-incremental learning (the "decoupled cosine"
baseline TEEN improves on; Wang et al., NeurIPS 2023, §3 and Table 1).

Base session: the engine trains backbone and cosine head with cross-entropy on the base
classes (use ``--head cosine``, the default of the ``fscil-*`` protocols). After it, every
base class's classifier becomes the mean embedding of its training images (test transform,
eval mode, unnormalised). Incremental sessions are training-free: the backbone is frozen and
each new class's prototype is the mean embedding of its few shots. Prediction is
``scale * cos(f(x), p_c)`` over all seen classes (``scale`` = the cosine head's, else 16).
The method is exactly :class:`cfs.prototype_strategy.SessionPrototypeStrategy`, which TEEN
extends too.
"""

from __future__ import annotations

from cfs import hookimpl
from cfs.prototype_strategy import SessionPrototypeStrategy
from cfs.registry import Registry


class ProtoFscil(SessionPrototypeStrategy):
    """FSCIL prototype baseline: base training, then class-mean prototypes of frozen features."""

    name = "protonet-fscil"
    compatibility = frozenset({"fscil"})


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(ProtoFscil)
