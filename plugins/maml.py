"""MAML (Finn, Abbeel & Levine, ICML 2017) and first-order MAML, METHODS.md 11.8.

Inner loop: theta' = theta - alpha grad L_S(theta), ``inner_steps`` times, on each task's
support set; outer loop: the meta-optimizer (Adam, lr 1e-3 by default) minimises the query
loss of theta' averaged over the meta-batch, differentiating through the inner steps (second
order). ``first_order=True`` (or ``--strategy fomaml``) treats the inner gradients as
constants. Written with torch.func (functional_call, grad, vmap over tasks), not module
clones; BatchNorm runs on batch statistics (transductive) as in the paper.
``adapt=head`` / ``adapt=body`` give ANIL / BOIL's inner loops (also registered as ``anil``,
``boil``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cfs import hookimpl
from cfs.errors import CfsError
from cfs.meta.inner import ADAPT_CHOICES
from cfs.meta.strategy import InnerLoopOptions, InnerLoopStrategy
from cfs.registry import Registry


@dataclass
class MAMLOptions(InnerLoopOptions):
    #: which parameters the inner loop adapts: all, head (ANIL) or body (BOIL)
    adapt: str = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adapt not in ADAPT_CHOICES:
            raise CfsError(f"unknown maml.adapt {self.adapt!r}: use one of {', '.join(ADAPT_CHOICES)}")


@dataclass
class FOMAMLOptions(MAMLOptions):
    first_order: bool = True


class MAML(InnerLoopStrategy):
    """MAML: meta-learn an initialisation that one inner SGD step adapts (second order)."""

    name = "maml"
    Options = MAMLOptions


class FOMAML(MAML):
    """First-order MAML: MAML with the inner gradients treated as constants."""

    name = "fomaml"
    Options = FOMAMLOptions


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(MAML)
    registry.add(FOMAML)
