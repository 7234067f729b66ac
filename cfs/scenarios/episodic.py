"""Few-shot episodes: N-way K-shot Q-query tasks sampled from meta-train/val/test classes.

A few-shot benchmark is a pool of labelled images plus a split of its *classes*; methods are
trained on episodes of meta-train classes and scored on episodes of unseen meta-test
classes. :class:`EpisodeSampler` draws episodes as index tensors (all tasks of a meta-batch
at once, no per-image Python loop) and gathers them from the pool on the run's device into an
:class:`~cfs.scenarios.episodes.EpisodeBatch`. Validation and test episodes come from a
generator seeded only by the run seed and the split name, so every method of a comparison is
scored on exactly the same episodes, whatever randomness its training consumed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.data.transforms import BatchTransform
from cfs.errors import CfsError
from cfs.scenarios.base import Scenario
from cfs.scenarios.episodes import EpisodeBatch

SPLITS = ("train", "val", "test")


@dataclass
class EpisodeShape:
    """N-way K-shot Q-query."""

    n_way: int
    k_shot: int
    q_query: int

    def __post_init__(self) -> None:
        if self.n_way < 2 or self.k_shot < 1 or self.q_query < 1:
            raise CfsError(f"bad episode shape {self.n_way}-way {self.k_shot}-shot {self.q_query}-query: "
                           "use n_way >= 2, k_shot >= 1, q_query >= 1")


@dataclass
class EpisodicSetup:
    """What an episodic scenario hands its loop: the image pool (all classes, labels global),
    the class set of each split and the episode shapes for meta-training and evaluation."""

    data: ArrayDataset
    classes: dict[str, list[int]]
    train_shape: EpisodeShape
    eval_shape: EpisodeShape
    #: per split, an episode source used instead of sampling ``data`` (same interface as
    #: :class:`EpisodeSampler`: ``sample_indices``, ``fixed_indices``, ``batch``), e.g. a
    #: learn2learn TaskDataset through :class:`cfs.data.l2l_adapter.L2LEpisodeSource`
    sources: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "classes": {s: len(self.classes.get(s, [])) for s in SPLITS},
            "class_splits": {s: list(self.classes.get(s, [])) for s in SPLITS},
            "train_episodes": vars(self.train_shape),
            "eval_episodes": vars(self.eval_shape),
            "images": len(self.data),
        }


class EpisodeSampler:
    """Samples N-way K-shot Q-query tasks from ``classes`` of ``data``.

    Per task: N distinct classes in random order (episode label = position), then K + Q
    distinct images of each, the first K the support and the rest the queries. Classes with
    fewer than K + Q images cannot form an episode and are an error.
    """

    def __init__(self, data: ArrayDataset, classes: Sequence[int], shape: EpisodeShape) -> None:
        self.data, self.shape = data, shape
        self.classes = torch.as_tensor(list(classes), dtype=torch.long)
        if len(self.classes) < shape.n_way:
            raise CfsError(f"{shape.n_way}-way episodes need at least {shape.n_way} classes, "
                           f"this split has {len(self.classes)}; lower n_way")
        y = data.y.cpu()
        members = [torch.nonzero(y == c).flatten() for c in self.classes.tolist()]
        counts = torch.tensor([len(m) for m in members])
        need = shape.k_shot + shape.q_query
        if int(counts.min()) < need:
            bad = int(self.classes[counts.argmin()])
            raise CfsError(f"class {bad} has {int(counts.min())} images, fewer than k_shot + q_query = {need}; "
                           "lower k_shot or q_query")
        width = int(counts.max())
        self.counts = counts
        self.table = torch.zeros(len(members), width, dtype=torch.long)  # class row -> image indices
        for i, m in enumerate(members):
            self.table[i, : len(m)] = m

    def sample_indices(self, n_tasks: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool indices of the support (T, N*K) and query (T, N*Q) images, class by class."""
        n, k, q = self.shape.n_way, self.shape.k_shot, self.shape.q_query
        rows = torch.rand(n_tasks, len(self.classes), generator=generator).argsort(1)[:, :n]  # (T, N)
        keys = torch.rand(n_tasks, n, self.table.shape[1], generator=generator)
        valid = torch.arange(self.table.shape[1]) < self.counts[rows].unsqueeze(-1)
        pick = keys.masked_fill(~valid, 2.0).argsort(-1)[..., : k + q]  # (T, N, K+Q) positions
        images = self.table[rows.unsqueeze(-1), pick]
        return images[..., :k].reshape(n_tasks, n * k), images[..., k:].reshape(n_tasks, n * q)

    def fixed_indices(self, n_episodes: int, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The same ``n_episodes`` for a given ``seed`` and ``split`` in every run and method."""
        salt = zlib.crc32(split.encode())
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + salt) % (2**63))
        return self.sample_indices(n_episodes, gen)

    def batch(self, support: torch.Tensor, query: torch.Tensor, transform: BatchTransform, device: torch.device,
              train: bool = False, generator: torch.Generator | None = None) -> EpisodeBatch:
        """Gather, normalise (augment when ``train``) and shape the images of index tensors
        from :meth:`sample_indices` into an :class:`EpisodeBatch` on ``device``."""
        n, k, q = self.shape.n_way, self.shape.k_shot, self.shape.q_query
        t = support.shape[0]
        x = self.data.x
        idx = torch.cat([support.flatten(), query.flatten()]).to(x.device)
        images = transform(x[idx].to(device, non_blocking=True), train=train, generator=generator)
        images = images.view(-1, *images.shape[1:])
        sx, qx = images[: t * n * k], images[t * n * k :]
        labels = torch.arange(n, device=device)
        return EpisodeBatch(
            support_x=sx.reshape(t, n * k, *sx.shape[1:]),
            support_y=labels.repeat_interleave(k).expand(t, n * k).contiguous(),
            query_x=qx.reshape(t, n * q, *qx.shape[1:]),
            query_y=labels.repeat_interleave(q).expand(t, n * q).contiguous(),
            n_way=n, k_shot=k, q_query=q,
        )


def split_classes_by_spec(n_classes: int, spec: dict[str, Any], seed: int) -> dict[str, list[int]]:
    """Meta-split the classes of a data set without a standard split: ``class_splits`` gives
    each split a class count or a fraction; classes are assigned in a seeded random order."""
    wanted = spec or {"train": 0.64, "val": 0.16, "test": 0.2}
    unknown = set(wanted) - set(SPLITS)
    if unknown:
        raise CfsError(f"class_splits has unknown split(s) {sorted(unknown)}; use train, val, test")
    sizes = {s: (round(float(v) * n_classes) if isinstance(v, float) and v <= 1 else int(v))
             for s, v in wanted.items()}
    if sum(sizes.values()) > n_classes:
        raise CfsError(f"class_splits {wanted} ask for {sum(sizes.values())} classes, the data set has {n_classes}")
    order = torch.randperm(n_classes, generator=torch.Generator().manual_seed(int(seed))).tolist()
    out, start = {}, 0
    for s in SPLITS:
        out[s] = sorted(order[start : start + sizes.get(s, 0)])
        start += sizes.get(s, 0)
    return out


def _pool(data: DataSplit) -> ArrayDataset:
    """All labelled images of a split: train and test parts share one label space."""
    return ArrayDataset.concat([data.train, data.test]) if len(data.test) else data.train


def episode_shapes(spec: dict, cfg: Any) -> tuple[EpisodeShape, EpisodeShape]:
    """Meta-train and evaluation episode shapes: the protocol's ``episodes`` mapping, each key
    overridable from the run config (``n_way``, ``k_shot``, ``q_query``, ``train_n_way``)."""
    ep = dict(spec.get("episodes") or {})

    def pick(key: str, default: int) -> int:
        value = getattr(cfg, key, None)
        return int(value if value is not None else ep.get(key, default))

    n_way, k_shot, q_query = pick("n_way", 5), pick("k_shot", 1), pick("q_query", 15)
    train_n_way = pick("train_n_way", n_way)
    return EpisodeShape(train_n_way, k_shot, q_query), EpisodeShape(n_way, k_shot, q_query)


def build_episodic(spec: dict, cfg: Any, data: DataSplit) -> Scenario:
    """Scenario of kind ``episodic``: a data set's standard class split (a
    :class:`~cfs.data.fewshot.FewShotSplit`) or one drawn by ``class_splits`` and
    ``class_split_seed`` for any other labelled data set, plus the episode shapes."""
    from cfs.scenarios.builtin import transform_for

    pool = _pool(data)
    classes = getattr(data, "class_splits", None)
    if not classes or spec.get("class_splits"):
        classes = split_classes_by_spec(pool.num_classes, spec.get("class_splits") or {},
                                        int(spec.get("class_split_seed", 0)))
    roles = spec.get("split_roles") or {}
    if roles:  # e.g. {train: val, val: null}: meta-train on the val classes when train is absent
        classes = {role: list(classes.get(src) or []) if src else [] for role, src in
                   {s: roles.get(s, s) for s in SPLITS}.items()}
    if not classes.get("train") or not classes.get("test"):
        hint = " (only val+test present? use the mini-imagenet-valtest-* protocols)" if classes.get("val") else ""
        raise CfsError(f"scenario {spec['name']!r} needs meta-train and meta-test classes{hint}")
    train_shape, eval_shape = episode_shapes(spec, cfg)
    transform = transform_for(spec, data)
    if spec.get("resize"):
        transform.resize = int(spec["resize"])
    setup = EpisodicSetup(pool, {s: list(classes.get(s, [])) for s in SPLITS}, train_shape, eval_shape)
    return Scenario(
        name=spec["name"], kind="episodic", experiences=[], class_order=list(range(pool.num_classes)),
        class_names=list(pool.class_names), transform=transform, input_shape=tuple(pool.x.shape[1:]),
        defaults=dict(spec.get("defaults") or {}), description=spec.get("description", ""), episodic=setup,
    )
