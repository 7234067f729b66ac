"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017), METHODS.md 11.7.

Each class of an episode is represented by its prototype, the mean embedding of its K support
images; a query is classified by a softmax over negative squared Euclidean distances to the
prototypes, and meta-training minimises the cross-entropy of the queries. The embedding is the
run's backbone (Conv-4 by default: 1600-d at 84x84, 64-d at 28x28); the head is unused.
Higher-way training (30-way for mini-ImageNet 1-shot in the paper) is ``--train-n-way 30``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.registry import Registry
from cfs.scenarios.episodes import EpisodeBatch
from cfs.strategy import Strategy


def prototypes(support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Class means of support embeddings: (T, S, D), labels (T, S) -> (T, N, D)."""
    onehot = F.one_hot(labels, n_way).to(support.dtype)  # (T, S, N)
    return onehot.transpose(1, 2) @ support / onehot.sum(1).unsqueeze(-1)


def squared_distances(queries: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """||q - p||^2 for every query and prototype: (T, Q, D), (T, N, D) -> (T, Q, N)."""
    return torch.cdist(queries, protos).pow(2)


def protonet_logits(support: torch.Tensor, support_y: torch.Tensor, queries: torch.Tensor, n_way: int) -> torch.Tensor:
    """-||f(q) - p_c||^2: the logits of p(y = c | q)."""
    return -squared_distances(queries, prototypes(support, support_y, n_way))


def embed_episode(model: torch.nn.Module, tasks: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone embeddings of all support and query images of a meta-batch in one pass."""
    t, s = tasks.support_x.shape[:2]
    x = torch.cat([tasks.support_x.flatten(0, 1), tasks.query_x.flatten(0, 1)])
    z = model.backbone(x).flatten(1)
    return z[: t * s].view(t, s, -1), z[t * s :].view(t, -1, z.shape[-1])


class ProtoNet(Strategy):
    """Prototypical Networks: nearest class-mean embedding under squared Euclidean distance."""

    name = "protonet"
    compatibility = frozenset({"episodic"})

    def logits(self, state: RunState, tasks: EpisodeBatch) -> torch.Tensor:
        support, queries = embed_episode(state.model, tasks)
        return protonet_logits(support, tasks.support_y, queries, tasks.n_way)

    @hookimpl
    def cfs_meta_loss(self, state: RunState, tasks: EpisodeBatch) -> torch.Tensor:
        logits = self.logits(state, tasks)
        return F.cross_entropy(logits.flatten(0, 1), tasks.query_y.flatten())

    @hookimpl
    def cfs_predict_episode(self, state: RunState, tasks: EpisodeBatch) -> torch.Tensor:
        with torch.no_grad():
            return self.logits(state, tasks)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(ProtoNet)
