"""Class-incremental streams: a class order and a split (``n_experiences`` or ``B50-Inc10``)."""

from __future__ import annotations

import re

import numpy as np
import torch

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.errors import CfsError
from cfs.scenarios.base import Experience

_SPLIT = re.compile(r"^B(\d+)-?Inc(\d+)$", re.IGNORECASE)


def class_order(n_classes: int, seed: int | None) -> list[int]:
    """PyCIL's order: ``np.random.seed(seed); np.random.permutation(n)``; identity if None."""
    if seed is None:
        return list(range(n_classes))
    return [int(c) for c in np.random.RandomState(seed).permutation(n_classes)]


def split_classes(n_classes: int, split: str | int) -> list[list[int]]:
    """Remapped labels per experience for ``split`` = an experience count or ``B<base>-Inc<k>``
    (``B0-Inc10`` means equal steps of 10)."""
    if isinstance(split, int) or str(split).isdigit():
        n = int(split)
        if n < 1 or n_classes % n:
            raise CfsError(f"cannot split {n_classes} classes into {n} equal experiences")
        size = n_classes // n
        return [list(range(i * size, (i + 1) * size)) for i in range(n)]
    m = _SPLIT.match(str(split))
    if not m:
        raise CfsError(f"bad split {split!r}: use a number of experiences or the form B50-Inc10")
    base, inc = int(m.group(1)), int(m.group(2))
    if inc < 1 or base > n_classes or (n_classes - base) % inc:
        raise CfsError(f"split {split!r} does not fit {n_classes} classes")
    steps = [list(range(base))] if base else []
    steps += [list(range(s, s + inc)) for s in range(base, n_classes, inc)]
    return steps


def remap(data: ArrayDataset, order: list[int]) -> ArrayDataset:
    """Relabel so that original label ``order[k]`` becomes ``k``."""
    lut = torch.empty(max(order) + 1, dtype=torch.long)
    lut[torch.tensor(order)] = torch.arange(len(order))
    names = [data.class_names[c] for c in order] if data.class_names else []
    return ArrayDataset(data.x, lut[data.y], names)


def build_stream(split: DataSplit, order: list[int], steps: list[list[int]]) -> list[Experience]:
    """Cut a remapped data split into experiences, one per list of classes."""
    if sorted(order) != list(range(split.num_classes)):
        raise CfsError(f"class order must be a permutation of 0..{split.num_classes - 1}")
    train, test = remap(split.train, order), remap(split.test, order)
    return [Experience(i, cls, train.with_classes(cls), test.with_classes(cls)) for i, cls in enumerate(steps)]
