"""Class-incremental streams: a class order and a split (``n_experiences`` or ``B50-Inc10``)."""

from __future__ import annotations

import re

import numpy as np
import torch

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.errors import CfsError
from cfs.scenarios.base import Experience

_SPLIT = re.compile(r"B([0-9]{1,9})-?Inc([0-9]{1,9})", re.IGNORECASE | re.ASCII)
_COUNT = re.compile(r"[0-9]{1,9}", re.ASCII)


def class_order(n_classes: int, seed: int | None) -> list[int]:
    """PyCIL's order: ``np.random.seed(seed); np.random.permutation(n)``; identity if None."""
    if seed is None:
        return list(range(n_classes))
    return [int(c) for c in np.random.RandomState(seed).permutation(n_classes)]


def split_classes(n_classes: int, split: str | int) -> list[list[int]]:
    """Remapped labels per experience for ``split`` = an experience count or ``B<base>-Inc<k>``
    (``B0-Inc10`` means equal steps of 10). Anything else, or a split that does not fit
    ``n_classes``, is a one-line :class:`CfsError`."""
    text = str(split).strip()
    if isinstance(split, int) and not isinstance(split, bool) or _COUNT.fullmatch(text):
        n = int(split) if isinstance(split, int) else int(text)
        if n < 1 or n > n_classes or n_classes % n:
            divisors = [d for d in range(1, n_classes + 1) if n_classes % d == 0]
            raise CfsError(f"cannot split {n_classes} classes into {n} equal experiences "
                           f"(use one of {', '.join(map(str, divisors))}, or B<base>-Inc<step>)")
        size = n_classes // n
        return [list(range(i * size, (i + 1) * size)) for i in range(n)]
    m = _SPLIT.fullmatch(text)
    if not m:
        raise CfsError(f"bad split {text[:40]!r}: use a number of experiences (e.g. 5) or the form "
                       f"B<base>-Inc<step> (e.g. B50-Inc10)")
    base, inc = int(m.group(1)), int(m.group(2))
    if inc < 1 or base > n_classes or (n_classes - base) % inc or (base == 0 and inc > n_classes):
        raise CfsError(f"split {text!r} does not fit {n_classes} classes: <base> must be at most "
                       f"{n_classes} and the remaining classes a multiple of <step> >= 1")
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
    for part in ("train", "test"):
        data = getattr(split, part)
        counts = torch.bincount(data.y.cpu(), minlength=split.num_classes)[: split.num_classes]
        empty = [data.class_names[c] if c < len(data.class_names) else str(c)
                 for c in torch.nonzero(counts == 0).flatten().tolist()]
        if empty:
            shown = ", ".join(repr(n) for n in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            raise CfsError(f"data set {split.name!r} has no {part} samples of class {shown}: every class "
                           f"needs train and test samples (add them, or remove the class)")
    train, test = remap(split.train, order), remap(split.test, order)
    return [Experience(i, cls, train.with_classes(cls), test.with_classes(cls)) for i, cls in enumerate(steps)]
