"""Class orders of a stream: by seed, from a file, or designed by the Curriculum Designer.

``--class-order`` (``RunConfig.class_order``):

* ``seed`` (default): PyCIL's permutation by ``--class-order-seed`` or the protocol's seed;
* ``file:PATH``: the class ids (original labels) in order, separated by spaces, commas or new
  lines, or a JSON list; it must be a permutation of ``0..n-1``;
* ``curriculum``: the order the Curriculum Designer ranks first (below).

**Curriculum Designer** (Singh et al., "Learning to Learn: How to Continuously Teach Humans and
Machines", ICCV 2023). Curricula are ranked from inter-class feature similarity: the cosine
distance between class prototypes (mean features) of a feature extractor, every row divided by
its sum (as in the authors' ``inter-dataset similarity`` notebook, which computes this matrix
from a pre-trained SqueezeNet). The paper's advantage function favours starting with *centrally
located* classes (low variance of their distances to the other classes) and ending with classes
*similar to the first* (to review it while the last classes are learnt). Here that advantage is
written as a score of an order ``pi`` of ``n`` classes (:func:`curriculum_score`)::

    score(pi) = - sum_k [ (1 - t_k) * v(pi_k) + t_k * d(pi_k, pi_0) ],   t_k = k / (n - 1)

with ``v`` the variance of a class's normalised distances to the others and ``d`` the
normalised distance, each divided by its largest value; position 0 counts only centrality, the
last only similarity to the first, the positions between a linear mix. The designed order is
the exact maximiser (:func:`design_order`: for each first class a linear assignment of the
others to the positions). Departures: the paper's text was not available offline (only its
abstract, a summary and the authors' distance notebook, whose ranking code is not published),
so the weighting above is this module's reading of the described advantage; and no
pre-trained network is available offline, so the features come from a *first pass*
(:func:`first_pass_features`): the run's backbone trained for one epoch on the first
``per_class`` training images of every class (the teacher's view of the whole curriculum, as
the paper's teacher network has).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from cfs.data.arrays import DataSplit
from cfs.errors import CfsError, shown

MODES = ("seed", "curriculum")
FILE_PREFIX = "file:"


# ----------------------------------------------------------------------------- the designer
def cosine_distances(prototypes: torch.Tensor) -> np.ndarray:
    """``D[i, j] = 1 - cos(p_i, p_j)`` between class prototypes (rows)."""
    p = F.normalize(prototypes.double(), dim=1)
    d = (1.0 - p @ p.T).clamp(min=0.0)
    d.fill_diagonal_(0.0)
    return d.numpy()


def normalise_rows(distances: np.ndarray) -> np.ndarray:
    """Every row divided by its sum (the authors' normalisation); a zero row stays zero."""
    d = np.asarray(distances, float)
    sums = d.sum(1, keepdims=True)
    return np.divide(d, sums, out=np.zeros_like(d), where=sums > 0)


def _terms(distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centrality ``v``, similarity-to-first ``d``), each scaled to at most 1."""
    d = normalise_rows(distances)
    n = len(d)
    off = ~np.eye(n, dtype=bool)
    v = np.array([d[i, off[i]].var() if n > 1 else 0.0 for i in range(n)])
    v = v / v.max() if v.max() > 0 else v
    top = d[off].max() if n > 1 else 0.0
    return v, (d / top if top > 0 else d)


def _weights(n: int) -> np.ndarray:
    return np.arange(n) / (n - 1) if n > 1 else np.zeros(n)


def curriculum_score(order: list[int], distances: np.ndarray) -> float:
    """The designer's score of ``order`` (higher is better) for the class distance matrix."""
    v, d = _terms(distances)
    t = _weights(len(order))
    first = order[0]
    return -float(sum((1 - t[k]) * v[c] + t[k] * d[c, first] for k, c in enumerate(order)))


def design_order(distances: np.ndarray) -> list[int]:
    """The order with the highest :func:`curriculum_score` (ties: the smaller first class)."""
    v, d = _terms(distances)
    n = len(v)
    if n == 1:
        return [0]
    t = _weights(n)
    best: tuple[float, list[int]] | None = None
    for first in range(n):
        rest = [c for c in range(n) if c != first]
        # cost[k - 1, r]: putting class rest[r] at position k (1..n-1)
        cost = np.array([[(1 - t[k]) * v[c] + t[k] * d[c, first] for c in rest] for k in range(1, n)])
        rows, cols = linear_sum_assignment(cost)
        total = v[first] + cost[rows, cols].sum()
        order = [first] + [rest[c] for c in cols[np.argsort(rows)]]
        if best is None or total < best[0] - 1e-12:
            best = (total, order)
    return best[1]


def rank_among(order: list[int], others: list[list[int]], distances: np.ndarray) -> int:
    """1-based rank of ``order``'s score among ``others`` and itself (1: ranked first)."""
    mine = curriculum_score(order, distances)
    return 1 + sum(curriculum_score(o, distances) > mine + 1e-12 for o in others)


# ----------------------------------------------------------------------------- features
def first_pass_features(data: DataSplit, cfg: Any, per_class: int = 200) -> torch.Tensor:
    """Class prototypes (n_classes x dim) of a first-pass extractor: the run's backbone with a
    linear head trained for one epoch (batch 32, the run's lr and momentum, seed ``cfg.seed``)
    on the first ``per_class`` training images of every class; prototypes are the mean
    features of those images (eval mode, no augmentation)."""
    from cfs.kinds import default_manager
    from cfs.models.backbones import build_backbone
    from cfs.scenarios.builtin import first_per_class, transform_for

    torch.manual_seed(int(getattr(cfg, "seed", 0)))
    subset = first_per_class(data.train, per_class)
    transform = transform_for({}, data)
    shape = data.input_shape
    backbone = build_backbone(default_manager().backbones, getattr(cfg, "backbone", "mlp"), in_channels=shape[0],
                              image_size=shape[-1])
    head = torch.nn.Linear(backbone.out_dim, data.num_classes)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=float(getattr(cfg, "lr", 0.01)), momentum=float(getattr(cfg, "momentum", 0.0)))
    generator = torch.Generator().manual_seed(int(getattr(cfg, "seed", 0)))
    backbone.train()
    order = torch.randperm(len(subset), generator=generator)
    for start in range(0, len(subset), 32):
        idx = order[start : start + 32]
        x = transform(subset.x[idx], train=False)
        loss = F.cross_entropy(head(backbone(x)), subset.y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    backbone.eval()
    with torch.no_grad():
        feats = torch.cat([backbone(transform(subset.x[s : s + 256], train=False)) for s in range(0, len(subset), 256)])
    return torch.stack([feats[subset.y == c].mean(0) for c in range(data.num_classes)])


# ----------------------------------------------------------------------------- --class-order
def parse_class_order(text: str) -> tuple[str, Path | None]:
    """``seed``, ``curriculum`` or ``file:PATH`` -> (mode, path); anything else, or a file
    that does not exist, is a one-line error."""
    value = str(text).strip()
    if value in MODES:
        return value, None
    if value.startswith(FILE_PREFIX) and value[len(FILE_PREFIX):].strip():
        path = Path(value[len(FILE_PREFIX):].strip())
        if not path.is_file():
            raise CfsError(f"--class-order {shown(value)}: no such file {shown(path)}")
        return "file", path
    raise CfsError(f"bad --class-order {shown(value)}: use seed, curriculum or file:PATH "
                   f"(a file of class ids in order)")


def read_order_file(path: Path, n_classes: int) -> list[int]:
    """Class ids from ``path`` (a JSON list, or ids separated by spaces, commas or lines);
    they must be a permutation of ``0..n_classes-1``."""
    text = path.read_text()
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else text.replace(",", " ").split()
        order = [int(v) for v in values]
        if any(isinstance(v, float) and not float(v).is_integer() for v in values):
            raise ValueError
    except (ValueError, TypeError, json.JSONDecodeError):
        raise CfsError(f"--class-order file {shown(path)}: not a list of integer class ids") from None
    if sorted(order) != list(range(n_classes)):
        raise CfsError(f"--class-order file {shown(path)}: the class ids must be a permutation of "
                       f"0..{n_classes - 1} (got {len(order)} ids)")
    return order


def resolve_class_order(cfg: Any, spec: dict, data: DataSplit) -> tuple[list[int], dict[str, Any]]:
    """The stream's class order and what it came from (recorded in ``run.json`` with the
    scenario: ``class_order_from``)."""
    from cfs.scenarios.class_incremental import class_order

    mode, path = parse_class_order(getattr(cfg, "class_order", None) or "seed")
    n = data.num_classes
    if mode == "file":
        return read_order_file(path, n), {"mode": "file", "path": str(path)}
    if mode == "curriculum":
        distances = cosine_distances(first_pass_features(data, cfg))
        order = design_order(distances)
        return order, {"mode": "curriculum", "extractor": f"first pass of {getattr(cfg, 'backbone', 'mlp')}",
                       "score": curriculum_score(order, distances), "distances": distances.round(6).tolist()}
    seed = cfg.class_order_seed if getattr(cfg, "class_order_seed", None) is not None else spec.get("class_order_seed")
    return class_order(n, seed), {"mode": "seed", "seed": seed}
