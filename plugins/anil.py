"""ANIL, Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals, ICLR 2020), METHODS.md 11.8.

MAML whose inner loop adapts only the linear head: the body is a feature extractor that is
meta-learned by the outer loop alone (the paper's finding: MAML's rapid learning is mostly
feature reuse). Same options as MAML except ``adapt``.
"""

from __future__ import annotations

from cfs import hookimpl
from cfs.meta.strategy import InnerLoopStrategy
from cfs.registry import Registry


class ANIL(InnerLoopStrategy):
    """ANIL: MAML with a head-only inner loop (the body is learnt by the outer loop only)."""

    name = "anil"
    adapt_set = "head"


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(ANIL)
