"""Few-shot class-incremental (FSCIL) scenarios: a base session, then N-way K-shot sessions.

Two ways to define the sessions (the ``fscil`` mapping of a protocol YAML):

* ``index_list: cifar100`` (or ``mini_imagenet``): the standard TOPIC/CEC protocol. File
  ``session_<s+1>.txt`` lists the training images of session ``s``: integer indices into
  torchvision's train set (CIFAR-100) or paths ``.../train/<class>/<file>`` (mini-ImageNet,
  resolved against the sorted ``<data-root>/train/<class>/*`` listing the image-folder loader
  produces). A session's classes are the labels of its images, in order of appearance.
* ``base_classes``, ``ways``, ``shots``, ``seed`` (and optionally ``sessions``): a generic
  FSCIL split of any data set. Classes are ordered by ``seed`` (PyCIL's permutation), the
  first ``base_classes`` form the base session with all their training images, then every
  session adds ``ways`` classes with ``shots`` training images each, drawn with ``seed``.

``--split B<base>-Inc<ways>`` overrides a generic split's base classes and ways; for an
index-list protocol it is a one-line error (the lists fix the sessions). CUB-200's lists hold
``CUB_200_2011/images/<class>/<file>`` paths, resolved against the data set's train split in
image-id order (:mod:`cfs.data.cub`).

After every session the engine evaluates all test images of every class seen so far (each
experience's test part holds all test images of its classes).

Index lists are looked up in ``$CFS_FSCIL_INDEX_LISTS/<name>``, ``<data-root>/fscil-index-lists/
<name>``, ``<data-root>/index_list/<name>`` (the upstream layout), then
``../shared/data/fscil-index-lists/<name>``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfs.data import default_root
from cfs.data.arrays import DataSplit
from cfs.errors import CfsError
from cfs.scenarios.base import Experience, Scenario
from cfs.scenarios.class_incremental import class_order, remap

_SESSION = re.compile(r"^session_(\d+)\.txt$")
_SPLIT = re.compile(r"[Bb](\d+)-[Ii]nc(\d+)")


def index_list_folder(name: str, data_root: str | None) -> Path:
    """The folder holding ``session_*.txt`` for protocol ``name``."""
    candidates = []
    if os.environ.get("CFS_FSCIL_INDEX_LISTS"):
        candidates.append(Path(os.environ["CFS_FSCIL_INDEX_LISTS"]) / name)
    root = default_root(data_root)
    candidates += [root / "fscil-index-lists" / name, root / "index_list" / name,
                   Path("../shared/data/fscil-index-lists") / name]
    for folder in candidates:
        if (folder / "session_1.txt").is_file():
            return folder
    raise CfsError(f"FSCIL index lists {name!r} not found (looked in {', '.join(str(c) for c in candidates)}); "
                   "set CFS_FSCIL_INDEX_LISTS to the folder holding <name>/session_1.txt")


def read_index_lists(folder: Path) -> list[list[str]]:
    """Lines of ``session_1.txt``, ``session_2.txt``, ... in session order."""
    files = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _SESSION.match(p.name)))
    if [n for n, _ in files] != list(range(1, len(files) + 1)):
        raise CfsError(f"{folder}: session files must be numbered session_1.txt .. session_N.txt without gaps")
    return [[line.strip() for line in p.read_text().splitlines() if line.strip()] for _, p in files]


def imagefolder_listing(train_dir: Path) -> dict[str, int]:
    """``<class>/<file>`` -> position in the sorted image-folder listing of ``train_dir``."""
    listing: dict[str, int] = {}
    k = 0
    for cls in sorted(p.name for p in train_dir.iterdir() if p.is_dir()):
        for f in sorted(p.name for p in (train_dir / cls).iterdir() if not p.name.startswith(".")):
            listing[f"{cls}/{f}"] = k
            k += 1
    return listing


def _path_indices(lines: list[str], listing: dict[str, int], where: str) -> list[int]:
    """Map ``.../<class>/<file>`` lines to train indices through ``listing``."""
    out = []
    for line in lines:
        key = "/".join(Path(line).parts[-2:])
        if key not in listing:
            raise CfsError(f"index list names {line}, which is not in {where}")
        out.append(listing[key])
    return out


def sessions_from_index_lists(lines: list[list[str]], data: DataSplit, listing: dict[str, int] | None = None,
                              where: str = "the train set") -> list[tuple[list[int], torch.Tensor]]:
    """(original classes, train indices) per session from the lines of the index files; path
    lines are looked up in ``listing`` (``<class>/<file>`` -> train index, found in ``where``)."""
    n = len(data.train)
    sessions, seen = [], set()
    for s, rows in enumerate(lines):
        if all(r.isdigit() for r in rows):
            idx = [int(r) for r in rows]
        elif listing is not None:
            idx = _path_indices(rows, listing, where)
        else:
            raise CfsError(f"session_{s + 1}.txt holds paths; this data set needs integer indices")
        if idx and max(idx) >= n:
            raise CfsError(f"session_{s + 1}.txt indexes image {max(idx)} but the train set has {n}; "
                           "is the data set the one the lists were made for?")
        index = torch.tensor(idx, dtype=torch.long)
        classes = list(dict.fromkeys(data.train.y[index].tolist()))
        if seen & set(classes):
            raise CfsError(f"session_{s + 1}.txt repeats classes of an earlier session: {sorted(seen & set(classes))}")
        seen |= set(classes)
        sessions.append((classes, index))
    return sessions


def generic_sessions(data: DataSplit, base_classes: int, ways: int, shots: int, seed: int | None,
                     n_sessions: int | None = None) -> list[tuple[list[int], torch.Tensor]]:
    """A base session of ``base_classes`` classes (all images), then ``ways``-way ``shots``-shot
    sessions over the remaining classes in the seeded class order."""
    c = data.num_classes
    if not 0 < base_classes < c or ways < 1 or shots < 1:
        raise CfsError(f"FSCIL split needs 0 < base_classes < {c}, ways >= 1 and shots >= 1")
    if (c - base_classes) % ways:
        raise CfsError(f"{c - base_classes} novel classes cannot be split into sessions of {ways}")
    order = class_order(c, seed)
    y = data.train.y
    sessions = [(order[:base_classes], torch.nonzero(torch.isin(y, torch.tensor(order[:base_classes]))).flatten())]
    rng = np.random.RandomState(0 if seed is None else seed)
    total = (c - base_classes) // ways
    for s in range(total if n_sessions is None else min(int(n_sessions), total)):
        classes = order[base_classes + s * ways : base_classes + (s + 1) * ways]
        picks = []
        for cls in classes:
            pool = torch.nonzero(y == cls).flatten().numpy()
            if len(pool) < shots:
                raise CfsError(f"class {cls} has {len(pool)} training images, fewer than {shots} shots")
            picks += sorted(rng.choice(pool, shots, replace=False).tolist())
        sessions.append((classes, torch.tensor(picks, dtype=torch.long)))
    return sessions


def build_sessions(data: DataSplit, sessions: list[tuple[list[int], torch.Tensor]]) -> tuple[list[int], list[Experience]]:
    """Remap labels to the order classes appear in, cut train by index and test by class."""
    order = [c for classes, _ in sessions for c in classes]
    rest = [c for c in range(data.num_classes) if c not in set(order)]
    train, test = remap(data.train, order + rest), remap(data.test, order + rest)
    exps, start = [], 0
    for i, (classes, index) in enumerate(sessions):
        labels = list(range(start, start + len(classes)))
        start += len(classes)
        exps.append(Experience(i, labels, train.subset(index), test.with_classes(labels)))
    return order, exps


def _split_override(spec: dict, cfg: Any, f: dict) -> dict:
    """``--split B<base>-Inc<ways>`` sets a generic split's base classes and ways (shots and
    seed stay the protocol's); index-list protocols have fixed sessions, so there it is an error."""
    split = getattr(cfg, "split", None)
    if split is None or str(split).strip() == "":
        return f
    text = str(split).strip()
    if f.get("index_list"):
        raise CfsError(f"--split does not apply to {spec.get('name', 'this protocol')!r}: its sessions are fixed "
                       f"by the index lists {f['index_list']!r}")
    m = _SPLIT.fullmatch(text)
    if m is None:
        raise CfsError(f"bad --split {text[:40]!r} for an FSCIL scenario: use B<base classes>-Inc<ways>, "
                       f"e.g. B5-Inc1")
    return {**f, "base_classes": int(m.group(1)), "ways": int(m.group(2))}


def _train_listing(spec: dict, cfg: Any) -> tuple[dict[str, int] | None, str]:
    """Where path lines of an index list point to: CUB-200's image-id order, else the sorted
    ``<data-root>/train/<class>/*`` listing of an image folder (None when there is none)."""
    root = getattr(cfg, "data_root", None)
    if spec.get("dataset") == "cub200":
        from cfs.data.cub import cub_folder, cub_train_listing

        return cub_train_listing(root), f"the train split of {cub_folder(root)}"
    train_dir = default_root(root) / "train"
    if train_dir.is_dir():
        return imagefolder_listing(train_dir), str(train_dir)
    return None, "the train set"


def build_fscil(spec: dict, cfg: Any, data: DataSplit) -> Scenario:
    """The builder registered for protocol files of ``kind: fscil``."""
    from cfs.scenarios.builtin import transform_for

    f = _split_override(spec, cfg, dict(spec.get("fscil") or {}))
    if f.get("index_list"):
        folder = index_list_folder(str(f["index_list"]), getattr(cfg, "data_root", None))
        listing, where = _train_listing(spec, cfg)
        sessions = sessions_from_index_lists(read_index_lists(folder), data, listing, where)
    else:
        seed = cfg.class_order_seed if getattr(cfg, "class_order_seed", None) is not None else f.get("seed")
        sessions = generic_sessions(data, int(f.get("base_classes", 0)), int(f.get("ways", 0)),
                                    int(f.get("shots", 0)), seed, f.get("sessions"))
    order, exps = build_sessions(data, sessions)
    names = [data.train.class_names[c] for c in order] if data.train.class_names else []
    return Scenario(
        name=spec["name"], kind="fscil", experiences=exps, class_order=order, class_names=names,
        transform=transform_for(spec, data), input_shape=data.input_shape,
        defaults=dict(spec.get("defaults") or {}), description=spec.get("description", ""),
    )
