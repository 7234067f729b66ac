"""One task of GP-MAML / GP-ANIL / GP-BOIL (Liu et al. 2022), METHODS.md section 2.2.

1. adapt theta -> theta' on the support set; 2. propagate labels over support + query with
the adapted body's embeddings scaled by psi; 3. pick pseudo-labelled queries, class-balanced,
by confidence; 4. adapt again from theta (not theta') on support + picks -> theta'' and score
the queries with it (with theta' when nothing was picked). Tasks run one by one: the picked
set has a data-dependent size and BatchNorm statistics must cover exactly support + picks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from cfs.meta.inner import InnerLoop, Params, adapt, episode_forward
from cfs.meta.label_propagation import RelationScale, label_propagation, tokens_to_map
from cfs.meta.picking import class_balanced_pick


@dataclass(frozen=True)
class Propagation:
    """Label-propagation graph settings [CODE]: top-k neighbours and the propagation weight a."""

    top_k: int = 20
    alpha: float = 0.99


@dataclass
class GPTaskOutput:
    """Query logits (from theta'' or theta'), the propagated scores F of support + query rows,
    and how many queries were picked."""

    query_logits: torch.Tensor
    propagated: torch.Tensor
    n_picked: int


class _Tokens(nn.Module):
    """``model.backbone.tokens`` under the model's own parameter names (for functional_call)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.tokens(x)


def feature_maps(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """(M, C, h, w) maps of the body run with ``params`` (flattened, they are its features)."""
    return tokens_to_map(functional_call(_Tokens(model), params, (x,)))


def gp_task(model: nn.Module, psi: RelationScale, adapted: Params, fixed: Params, sx: torch.Tensor,
            sy: torch.Tensor, qx: torch.Tensor, n_way: int, loop: InnerLoop, prop: Propagation,
            top_p: int | None) -> GPTaskOutput:
    """Steps 1-4 for one task; differentiable in theta (through both inner loops) and psi."""
    forward = episode_forward(model, n_way)
    theta1 = {**fixed, **adapt(forward, adapted, fixed, sx, sy, loop)}
    fmap = feature_maps(model, theta1, torch.cat([sx, qx]))
    scores = label_propagation(fmap.flatten(1), psi(fmap), sy, n_way, prop.top_k, prop.alpha)
    idx, pseudo = class_balanced_pick(scores[sy.shape[0]:], n_way, top_p)
    if idx.numel() == 0:
        return GPTaskOutput(forward(theta1, qx), scores, 0)
    theta2 = {**fixed, **adapt(forward, adapted, fixed, torch.cat([sx, qx[idx]]), torch.cat([sy, pseudo]), loop)}
    return GPTaskOutput(forward(theta2, qx), scores, int(idx.numel()))
