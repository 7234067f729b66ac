"""GP-MAML, GP-ANIL, GP-BOIL: "Generating Pseudo-labels Adaptively for Few-shot Model-Agnostic
Meta-Learning" (Liu, Wang, Zhang & He, 2022), METHODS.md section 2.

Per task: adapt on the support set (one step of 0.5), propagate labels over support + query
(TPN: per-example scale from the relation network psi, Gaussian affinity, top-20 graph,
a = 0.99), pick the most confident pseudo-labelled queries class-balanced (the top 75 by
confidence in meta-training, all at test, then m per class with m the smallest class count),
adapt again from theta on support + picks, and score the queries with that. Outer loss
CE(queries) + CE(F, labels of support + query) (the TPN loss), averaged over the meta-batch;
theta and psi are meta-trained jointly, second order. The same steps run at meta-test time
(transductive). GP-ANIL / GP-BOIL adapt only the head / only the body in both inner loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.meta.gp import Propagation, feature_maps, gp_task
from cfs.meta.inner import split_parameters
from cfs.meta.label_propagation import RelationScale
from cfs.meta.strategy import InnerLoopOptions, InnerLoopStrategy
from cfs.registry import Registry
from cfs.scenarios.episodes import EpisodeBatch


@dataclass
class GPOptions(InnerLoopOptions):
    inner_lr: float = 0.5
    #: neighbours kept per row of the propagation graph
    top_k: int = 20
    #: propagation weight a in F = (I - a S)^-1 Y
    alpha: float = 0.99
    #: queries kept by confidence before class balancing, in meta-training (0: all)
    train_pick: int = 75
    #: the same at meta-test time (0: all, the [CODE] default)
    test_pick: int = 0
    #: weight of the TPN label-propagation loss in the outer loss
    tpn_weight: float = 1.0
    #: psi's scale: "tpn" (unconstrained, as TPN's code) or "positive" (softplus + 0.1; stable
    #: when the body's map is tiny, e.g. 1x1 for Conv-4 at 28x28, where the raw scale can near 0)
    sigma: str = "tpn"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_k < 1 or not 0 < self.alpha < 1 or self.train_pick < 0 or self.test_pick < 0:
            raise CfsError("gp options need top_k >= 1, 0 < alpha < 1, train_pick >= 0 and test_pick >= 0")
        if self.sigma not in ("tpn", "positive"):
            raise CfsError(f"unknown gp sigma {self.sigma!r}: use tpn or positive")


class GPMAML(InnerLoopStrategy):
    """GP-MAML: MAML re-adapted on support + class-balanced label-propagation pseudo-labels."""

    name = "gp-maml"
    Options = GPOptions
    adapt_set = "all"

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.psi: RelationScale | None = None
        #: queries picked per task in the last meta-batch (how "adaptive" the picking was)
        self.last_picked: list[int] = []

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        super().cfs_before_run(state)
        shape = state.scenario.input_shape
        size = state.scenario.transform.resize or shape[-1]
        with torch.no_grad():
            params = dict(state.model.named_parameters())
            probe = torch.zeros(2, shape[0], size, size, device=state.device)
            fmap = feature_maps(state.model, params, probe)
        self.psi = RelationScale(fmap.shape[1], fmap.shape[-1], self.options.sigma == "positive").to(state.device)

    @hookimpl
    def cfs_extra_parameters(self, state: RunState) -> list[torch.nn.Parameter]:
        return list(self.psi.parameters()) if self.psi is not None else []

    def run_tasks(self, state: RunState, tasks: EpisodeBatch, train: bool):
        o = self.options
        loop = self.inner_loop(train)
        pick = o.train_pick if train else o.test_pick
        adapted, fixed = split_parameters(state.model, self.adapt)
        prop = Propagation(o.top_k, o.alpha)
        outs = [gp_task(state.model, self.psi, adapted, fixed, tasks.support_x[t], tasks.support_y[t],
                        tasks.query_x[t], tasks.n_way, loop, prop, pick or None) for t in range(tasks.n_tasks)]
        self.last_picked = [out.n_picked for out in outs]
        return outs

    @hookimpl
    def cfs_meta_loss(self, state: RunState, tasks: EpisodeBatch) -> torch.Tensor:
        outs = self.run_tasks(state, tasks, train=True)
        losses = []
        for t, out in enumerate(outs):
            labels = torch.cat([tasks.support_y[t], tasks.query_y[t]])
            losses.append(F.cross_entropy(out.query_logits, tasks.query_y[t])
                          + self.options.tpn_weight * F.cross_entropy(out.propagated, labels))
        return torch.stack(losses).mean()

    @hookimpl
    def cfs_predict_episode(self, state: RunState, tasks: EpisodeBatch) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([out.query_logits for out in self.run_tasks(state, tasks, train=False)])

    def state_dict(self) -> dict[str, Any]:
        return {"psi": self.psi.state_dict() if self.psi is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("psi") is not None and self.psi is not None:
            self.psi.load_state_dict(state["psi"])


class GPANIL(GPMAML):
    """GP-ANIL: GP-MAML with head-only inner loops."""

    name = "gp-anil"
    adapt_set = "head"


class GPBOIL(GPMAML):
    """GP-BOIL: GP-MAML with body-only inner loops."""

    name = "gp-boil"
    adapt_set = "body"


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    for cls in (GPMAML, GPANIL, GPBOIL):
        registry.add(cls)
