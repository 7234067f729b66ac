"""BOIL, Body Only update in Inner Loop (Oh, Yoo, Kim & Yun, ICLR 2021), METHODS.md 11.8.

MAML whose inner loop adapts only the body; the head is frozen during adaptation and learnt
by the outer loop only, which forces task-specific change into the representation
("representation change" rather than reuse). Same options as MAML except ``adapt``.
"""

from __future__ import annotations

from cfs import hookimpl
from cfs.meta.strategy import InnerLoopStrategy
from cfs.registry import Registry


class BOIL(InnerLoopStrategy):
    """BOIL: MAML with a body-only inner loop (the head is learnt by the outer loop only)."""

    name = "boil"
    adapt_set = "body"


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(BOIL)
