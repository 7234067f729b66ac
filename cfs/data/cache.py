"""A disk cache of decoded data sets, so that only the first run pays for decoding images.

Decoding 60,000 CIFAR-10 JPEGs takes seconds on every run; loading the same pixels back as
one ``torch.save`` file takes a fraction of that. An entry is keyed by what it was built from
(loader, source path, the files' count, total size and newest mtime, loader options), so
editing, adding or removing a source file, or asking for another image size, builds a fresh
entry instead of serving stale pixels. Entries hold only plain tensors, strings and floats and
are read with ``weights_only=True``: a cache file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from cfs.data.arrays import ArrayDataset, DataSplit

# Bumped whenever what a loader builds changes, so entries written by older code are not reused.
FORMAT_VERSION = 1
_PARTS = ("train", "test")


def cache_dir() -> Path:
    """``$CFS_CACHE_DIR`` if set, else ``~/.cache/cfs``: one place per user, overridable for tests
    and for machines where the home folder is small."""
    env = os.environ.get("CFS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cfs"


def fingerprint(path: Path) -> dict[str, int]:
    """Count, total byte size and newest mtime (ns) of the files below ``path`` (or of ``path``).

    Stat calls only, no reads: cheap even for 60,000 files, yet any edit, addition or removal
    changes it. Folder mtimes count too, so renaming a file into another class folder (same
    count, size and file mtimes) still changes the fingerprint.
    """
    n_files = total_bytes = 0
    newest = 0
    stack = [Path(path)]
    while stack:
        current = stack.pop()
        st = current.stat()
        newest = max(newest, st.st_mtime_ns)
        if not current.is_dir():
            n_files, total_bytes = n_files + 1, total_bytes + st.st_size
            continue
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                else:
                    st = entry.stat()
                    n_files, total_bytes = n_files + 1, total_bytes + st.st_size
                    newest = max(newest, st.st_mtime_ns)
    return {"files": n_files, "bytes": total_bytes, "mtime_ns": newest}


def cache_key(kind: str, source: Path | Sequence[Path], options: dict[str, Any]) -> str:
    """sha256 of the loader name, resolved source path(s), their fingerprints and options."""
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    described = [
        {"path": str(Path(s).resolve()), **fingerprint(Path(s))} for s in sources
    ]
    blob = json.dumps(
        {"kind": kind, "version": FORMAT_VERSION, "sources": described, "options": options},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _entry_prefix(kind: str, source: Path | Sequence[Path]) -> str:
    """``<kind>-<hash of the source paths>-``: all entries ever built from one source share it,
    so writing a new one can delete the stale ones instead of letting the cache grow."""
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    paths = "\n".join(str(Path(s).resolve()) for s in sources)
    return f"{kind}-{hashlib.sha256(paths.encode()).hexdigest()[:12]}-"


def save_split(split: DataSplit, path: Path) -> None:
    """Write ``split`` to ``path`` atomically: a temp file in the same folder, then
    ``os.replace``, so a crash or a concurrent run never leaves a half-written entry behind."""
    payload: dict[str, Any] = {"version": FORMAT_VERSION, "name": split.name,
                               "mean": list(split.mean), "std": list(split.std)}
    for part in _PARTS:
        data: ArrayDataset = getattr(split, part)
        payload[f"{part}_x"] = data.x.contiguous()
        payload[f"{part}_y"] = data.y.contiguous()
        payload[f"{part}_class_names"] = list(data.class_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_split(path: Path) -> DataSplit:
    """Read an entry written by :func:`save_split`."""
    payload = torch.load(path, weights_only=True)
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"cache entry {path} has format {payload.get('version')}")
    parts = {
        part: ArrayDataset(payload[f"{part}_x"], payload[f"{part}_y"],
                           list(payload[f"{part}_class_names"]))
        for part in _PARTS
    }
    return DataSplit(payload["name"], parts["train"], parts["test"],
                     tuple(payload["mean"]), tuple(payload["std"]))


def cached_split(
    kind: str,
    source: Path | Sequence[Path],
    options: dict[str, Any],
    build: Callable[[], DataSplit],
) -> DataSplit:
    """Return the split ``build()`` makes from ``source``, from the cache when it is current.

    ``source`` is the folder (or folders) the split is decoded from; ``options`` are the loader
    options that change the result (e.g. image size). An unreadable entry is rebuilt; a cache
    folder that cannot be written only costs the speed-up (a warning), never the run.
    """
    prefix = _entry_prefix(kind, source)
    path = cache_dir() / f"{prefix}{cache_key(kind, source, options)[:32]}.pt"
    if path.is_file():
        try:
            return load_split(path)
        except Exception as exc:  # corrupt or foreign file: rebuild it below
            warnings.warn(f"ignoring unreadable cache entry {path}: {exc}", stacklevel=2)
    split = build()
    try:
        save_split(split, path)
        for stale in path.parent.glob(f"{prefix}*.pt"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"could not write cache entry {path}: {exc}", stacklevel=2)
    return split
