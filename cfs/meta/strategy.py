"""The shared base of the gradient-based meta-learners (MAML, FOMAML, ANIL, BOIL, GP-*).

They differ only in which parameters the inner loop adapts and in what happens around it, so
the episodic hooks live here once: ``cfs_before_run`` switches BatchNorm to batch statistics
(MAML's transductive BN, which vmap needs), ``cfs_meta_loss`` is the query cross-entropy after
inner adaptation (second order unless ``first_order``), ``cfs_predict_episode`` adapts with
``test_inner_steps`` and scores the queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.meta.batchnorm import use_batch_statistics
from cfs.meta.inner import InnerLoop, meta_query_logits
from cfs.scenarios.episodes import EpisodeBatch
from cfs.strategy import Strategy


@dataclass
class InnerLoopOptions:
    """Inner-loop settings (MAML Omniglot 5-way defaults: one step of 0.4; mini-ImageNet uses
    ``inner_lr=0.01 inner_steps=5 test_inner_steps=10``)."""

    inner_steps: int = 1
    inner_lr: float = 0.4
    #: steps at meta-test time; ``None`` = ``inner_steps``
    test_inner_steps: int | None = None
    #: drop second-order terms (FOMAML)
    first_order: bool = False
    #: True: one torch.func.vmap over the tasks of a meta-batch; False: a loop on plain autograd
    #: (same numbers); None: vmap unless a conv model on a CPU (cfs.meta.inner.default_vectorize)
    vectorize: bool | None = None

    def __post_init__(self) -> None:
        if self.inner_steps < 1 or (self.test_inner_steps is not None and self.test_inner_steps < 1):
            raise CfsError("inner_steps and test_inner_steps must be >= 1")
        if self.inner_lr <= 0:
            raise CfsError(f"inner_lr must be > 0, got {self.inner_lr}")


class InnerLoopStrategy(Strategy):
    """Base class; subclasses set ``adapt_set`` (``all`` / ``head`` / ``body``)."""

    compatibility = frozenset({"episodic"})
    Options = InnerLoopOptions
    adapt_set: ClassVar[str] = "all"

    @property
    def adapt(self) -> str:
        return getattr(self.options, "adapt", self.adapt_set)

    def inner_loop(self, train: bool) -> InnerLoop:
        o = self.options
        if train:
            return InnerLoop(o.inner_steps, o.inner_lr, o.first_order, self.adapt)
        steps = o.test_inner_steps if o.test_inner_steps is not None else o.inner_steps
        # prediction needs no graph through the inner gradients: first order is exact here
        return InnerLoop(steps, o.inner_lr, True, self.adapt)

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        use_batch_statistics(state.model)

    @hookimpl
    def cfs_meta_loss(self, state: RunState, tasks: EpisodeBatch) -> torch.Tensor:
        logits = meta_query_logits(state.model, tasks, self.inner_loop(True), self.options.vectorize)
        return F.cross_entropy(logits.flatten(0, 1), tasks.query_y.flatten())

    @hookimpl
    def cfs_predict_episode(self, state: RunState, tasks: EpisodeBatch) -> torch.Tensor:
        with torch.no_grad():  # torch.func.grad still computes the inner gradients
            return meta_query_logits(state.model, tasks, self.inner_loop(False), self.options.vectorize)
