"""CEC (Zhang, Song, Lin, Wu, Song; CVPR 2021, "Few-Shot Incremental Learning with Continually
Evolved Classifiers").

[CODE, icoz69/CEC-CVPR2021 ``models/cec``] Three stages:

1. **Base training** (the code's ``-project base`` pre-training): backbone and cosine classifier
   trained with cross-entropy on the base classes; here the engine's base session, exactly as
   for the prototype baseline (``--head cosine``).
2. **Pseudo-incremental episodes** (``models/cec/fscil_trainer.py``): every episode draws
   ``way`` base classes with ``shot`` support and ``query`` query images each; the first
   ``low_way`` classes, rotated by a random 90/180/270 degrees per class, become *pseudo-novel*
   classes (``low_shot`` support images each, the same queries rotated), so each episode is a
   ``way + low_way``-way problem. The classifier of a class is its support mean; a **graph
   attention module** (one-head self-attention over the set {classifiers, query}, residual and
   LayerNorm; the code's ``MultiHeadAttention(1, d, d, d, dropout=0.5)``) adapts the classifiers
   and the query together, and the logits are ``temperature * cos(query', classifier')``.
   Cross-entropy trains backbone (``lr``, 0.002 for CIFAR-100) and attention (``lr_attention``,
   0.0002) with SGD (momentum 0.9, Nesterov, weight decay 5e-4) and a step schedule (``step``
   epochs, ``gamma``); as in the code the whole model is in eval mode during the episodes
   (BatchNorm statistics frozen, dropout off).
3. **Incremental sessions** (training-free): the backbone is frozen; base classifiers are the
   class means of the base training images (``replace_base_fc``), each new class's the mean of
   its shots. Prediction adapts all seen classifiers with each test image through the attention
   module, then ``temperature * cos``.

Defaults: the README's CIFAR-100 command (``-episode_way 15 -episode_shot 1 -low_way 15
-low_shot 1 -lr_base 0.002 -lrg 0.0002 -step 20 -gamma 0.5 -epochs_base 100``), the code's
``episode_query 15``, ``train_episode 50`` and ``temperature 16``. ``way``/``low_way`` are capped
at the number of base classes. Departures: the code keeps the episode epoch with the best
accuracy on the test images of a pseudo session run (validation on test data); cfs keeps the last
epoch. ``epochs`` and ``episodes`` are what a CPU run lowers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.features import run_cache
from cfs.prototype_strategy import SessionPrototypeStrategy
from cfs.registry import Registry


class GraphAttention(nn.Module):
    """CEC's classifier adaptation: one-head scaled dot-product self-attention over a set of
    vectors (classifiers and a query), dropout, residual connection and LayerNorm."""

    def __init__(self, dim: int, dropout: float = 0.5, attn_dropout: float = 0.1) -> None:
        super().__init__()
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        for w in (self.w_q, self.w_k, self.w_v):
            nn.init.normal_(w.weight, mean=0.0, std=math.sqrt(2.0 / (dim + dim)))
        self.fc = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.fc.weight)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.temperature = math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, N, D) -> (B, N, D)."""
        attn = torch.softmax(self.w_q(x) @ self.w_k(x).transpose(1, 2) / self.temperature, dim=2)
        out = self.attn_dropout(attn) @ self.w_v(x)
        return self.norm(self.dropout(self.fc(out)) + x)


def adapted_logits(attention: GraphAttention, prototypes: torch.Tensor, queries: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """CEC's ``_forward``: for every query, self-attention over {all prototypes, that query},
    then ``temperature * cos(query', prototype')``. ``prototypes`` (C, D), ``queries`` (Q, D) ->
    (Q, C)."""
    q, c = queries.shape[0], prototypes.shape[0]
    combined = torch.cat([prototypes.unsqueeze(0).expand(q, c, -1), queries.unsqueeze(1)], dim=1)
    out = attention(combined)
    protos, query = out[:, :c], out[:, c:]
    return temperature * F.cosine_similarity(query, protos, dim=-1)


def rotate(x: torch.Tensor, quarter_turns: int) -> torch.Tensor:
    """Rotate NCHW images by ``quarter_turns`` x 90 degrees (the code's transpose/flip pairs)."""
    return torch.rot90(x, k=quarter_turns, dims=(2, 3))


@dataclass
class CecOptions:
    #: episode epochs after base training and episodes per epoch (``epochs_base``, ``train_episode``)
    epochs: int = 100
    episodes: int = 50
    #: classes, support and query images per class of an episode (capped at the base classes)
    way: int = 15
    shot: int = 1
    query: int = 15
    #: pseudo-novel (rotated) classes per episode and their support images
    low_way: int = 15
    low_shot: int = 1
    #: backbone and attention learning rates (``lr_base``, ``lrg``), step schedule
    lr: float = 0.002
    lr_attention: float = 0.0002
    step: int = 20
    gamma: float = 0.5
    weight_decay: float = 5e-4
    temperature: float = 16.0
    scale: float = 16.0  # kept for the prototype base class; prediction uses ``temperature``

    def __post_init__(self) -> None:
        for name in ("way", "shot", "query", "low_way", "low_shot", "step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.low_shot > self.shot:
            raise ValueError(f"low_shot ({self.low_shot}) cannot exceed shot ({self.shot})")
        if self.epochs < 0 or self.episodes < 0:
            raise ValueError("epochs and episodes must be >= 0")


class Cec(SessionPrototypeStrategy):
    """CEC: graph-attention classifier adaptation trained with rotated pseudo-incremental episodes."""

    name = "cec"
    Options = CecOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.attention: GraphAttention | None = None
        #: images the episode stage trained on (for budget accounting)
        self.episode_images = 0

    # ----------------------------------------------------------------------------- episodes
    def _sample_episode(self, state: RunState, by_class: list[torch.Tensor], way: int,
                        low_way: int) -> tuple[torch.Tensor, list[int]]:
        """Train indices (way, shot + query) of an episode's classes and the quarter turns
        (1..3, i.e. 90/180/270 degrees) of its ``low_way`` pseudo-novel classes."""
        o, g = self.options, state.generator
        classes = torch.randperm(len(by_class), generator=g)[:way].tolist()
        picks = []
        for c in classes:
            pool = by_class[c]
            picks.append(pool[torch.randperm(len(pool), generator=g)[: o.shot + o.query].to(pool.device)])
        turns = (torch.randint(0, 3, (low_way,), generator=g) + 1).tolist()
        return torch.stack(picks), turns

    def _episode_loss(self, state: RunState, by_class: list[torch.Tensor], way: int, low_way: int) -> torch.Tensor:
        o = self.options
        picks, turns = self._sample_episode(state, by_class, way, low_way)
        x = state.train_data.x
        backbone = state.model.backbone
        sup = state.prepare(x[picks[:, : o.shot].reshape(-1)], train=True)
        qry = state.prepare(x[picks[:, o.shot :].reshape(-1)], train=True)
        low_sup = sup.view(way, o.shot, *sup.shape[1:])[:low_way, : o.low_shot]
        low_qry = qry.view(way, o.query, *qry.shape[1:])[:low_way]
        low_sup = torch.cat([rotate(low_sup[i], t) for i, t in enumerate(turns)])
        low_qry = torch.cat([rotate(low_qry[i], t) for i, t in enumerate(turns)])
        feats = backbone(torch.cat([sup, qry, low_sup, low_qry]))
        n1, n2, n3 = sup.shape[0], qry.shape[0], low_sup.shape[0]
        f_sup, f_qry, f_lsup, f_lqry = feats[:n1], feats[n1 : n1 + n2], feats[n1 + n2 : n1 + n2 + n3], feats[n1 + n2 + n3 :]
        protos = torch.cat([f_sup.view(way, o.shot, -1).mean(1), f_lsup.view(low_way, o.low_shot, -1).mean(1)])
        queries = torch.cat([f_qry, f_lqry])
        labels = torch.cat([torch.arange(way).repeat_interleave(o.query),
                            way + torch.arange(low_way).repeat_interleave(o.query)]).to(queries.device)
        self.episode_images += n1 + n2 + n3 + f_lqry.shape[0]
        return F.cross_entropy(adapted_logits(self.attention, protos, queries, o.temperature), labels)

    def _train_episodes(self, state: RunState) -> None:
        o = self.options
        dim = self._feature_dim(state)
        self.attention = GraphAttention(dim).to(state.device)
        if o.epochs == 0 or o.episodes == 0:
            return
        y = state.train_data.y
        classes = state.experience.classes
        by_class = [torch.nonzero(y == c).flatten() for c in classes]
        way = min(o.way, len(classes))
        low_way = min(o.low_way, way)
        backbone = state.model.backbone
        opt = torch.optim.SGD([{"params": backbone.parameters(), "lr": o.lr},
                               {"params": self.attention.parameters(), "lr": o.lr_attention}],
                              momentum=0.9, nesterov=True, weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=o.step, gamma=o.gamma)
        was_training = state.model.training
        state.model.eval()  # as the code: BatchNorm statistics frozen, dropout off during episodes
        self.attention.eval()
        try:
            for _ in range(o.epochs):
                for _ in range(o.episodes):
                    loss = self._episode_loss(state, by_class, way, low_way)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                sched.step()
        finally:
            state.model.train(was_training)

    @staticmethod
    def _feature_dim(state: RunState) -> int:
        dim = getattr(state.model.backbone, "out_dim", None) or getattr(state.model.head, "in_features", None)
        if dim is None:
            with torch.no_grad():
                dim = state.model.backbone(state.prepare(state.train_data.x[:1])).shape[1]
        return int(dim)

    # ----------------------------------------------------------------------------- hooks
    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        """Refuse, before any training, a base session too small for the episodes."""
        o = self.options
        base = state.scenario.experiences[0].train.y
        short = int(torch.bincount(base).min()) if len(base) else 0
        if o.epochs and o.episodes and short < o.shot + o.query:
            raise CfsError(f"CEC episodes need {o.shot + o.query} images per base class (shot + query) but a base "
                           f"class has {short}: lower -o cec.query or -o cec.shot")

    @hookimpl
    def cfs_after_training_exp(self, state: RunState) -> None:
        if state.is_first_experience:
            self._train_episodes(state)
        super().cfs_after_training_exp(state)

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        feats = run_cache(state).prepared(state.model.backbone, x)
        self.attention.eval()
        protos = self.bank.prototypes[: state.n_seen].to(feats.device)
        return adapted_logits(self.attention, protos, feats, self.options.temperature)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "attention": None if self.attention is None else self.attention.state_dict(),
                "episode_images": self.episode_images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.episode_images = state.get("episode_images", 0)
        if state.get("attention") is not None:
            weight = state["attention"]["w_q.weight"]
            self.attention = GraphAttention(weight.shape[1]).to(weight.device)
            self.attention.load_state_dict(state["attention"])


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Cec)
