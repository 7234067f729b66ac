"""Data sets by name: ``load_dataset("cifar10")`` returns a :class:`DataSplit` in memory.

One entry point keeps the CLI, configs and scenarios free of per-data-set code: they name a
data set and pass its options through, and every mistake (unknown name, unknown option,
missing files) comes back as a one-line :class:`CfsError`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.data.sources import (
    default_root,
    load_cifar10,
    load_cifar100,
    load_digits,
    load_fashion_mnist,
    load_imagefolder,
    load_mnist,
    load_synthetic,
)
from cfs.data.cub import load_cub200
from cfs.data.fewshot import load_cifar_fs, load_fc100, load_fewshot_imagefolder, load_mini_imagenet, load_omniglot
from cfs.errors import CfsError, unknown

Loader = Callable[..., DataSplit]

DATASETS: dict[str, Loader] = {
    "digits": load_digits,
    "synthetic": load_synthetic,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "imagefolder": load_imagefolder,
    "omniglot": load_omniglot,
    "mini-imagenet": load_mini_imagenet,
    "cifar-fs": load_cifar_fs,
    "fc100": load_fc100,
    "fewshot-imagefolder": load_fewshot_imagefolder,
    "cub200": load_cub200,
}


def dataset_options(name: str) -> dict[str, Any]:
    """The options data set ``name`` accepts, with their defaults (for help text and checks)."""
    if name not in DATASETS:
        raise unknown("data set", name, DATASETS)
    params = inspect.signature(DATASETS[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def load_dataset(
    name: str, root: str | Path | None = None, download: bool = False, **options: Any
) -> DataSplit:
    """Load data set ``name`` from ``root`` (default ``$CFS_DATA_ROOT``, else ``./data``).

    ``download=True`` lets torchvision fetch data sets it knows; ``options`` go to the loader
    (e.g. ``image_size`` for ``imagefolder``). An option the loader does not take is a
    CfsError listing the valid ones, instead of a TypeError from deep inside. A file that
    cannot be read is a CfsError naming it, raised while loading, before any training.
    """
    valid = dataset_options(name)
    bad = sorted(set(options) - set(valid))
    if bad:
        allowed = ", ".join(sorted(valid)) or "none"
        raise CfsError(f"data set {name!r} has no option {', '.join(bad)} (valid: {allowed})")
    try:
        return DATASETS[name](None if root is None else Path(root), download=download, **options)
    except OSError as exc:  # a file the loader did not expect to fail (permissions, I/O error)
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise CfsError(f"cannot read data set {name!r}{where}: {exc.strerror or exc}") from None


__all__ = [
    "ArrayDataset",
    "DATASETS",
    "DataSplit",
    "dataset_options",
    "default_root",
    "load_dataset",
]
