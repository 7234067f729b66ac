"""A disk cache of decoded data sets, so that only the first run pays for decoding images.

Decoding 60,000 CIFAR-10 JPEGs takes seconds on every run; loading the same pixels back as
one ``torch.save`` file takes a fraction of that. An entry is keyed by what it was built from
(loader, source path, the files' count, total size and newest mtime, loader options), so
editing, adding or removing a source file, or asking for another image size, builds a fresh
entry instead of serving stale pixels. Entries hold only plain tensors, strings and floats and
are read with ``weights_only=True``: a cache file cannot run code. Each entry records a sha256
of its content; an entry that is truncated or does not match it is rebuilt, with a one-line
warning on stderr.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.errors import CfsError

# Bumped whenever what a loader builds changes, so entries written by older code are not reused.
FORMAT_VERSION = 2  # 2: entries record a checksum of their content
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
    count, size and file mtimes) still changes the fingerprint. Symlinks are followed; one that
    leads back into a folder above it (a loop) or cannot be followed is a one-line
    :class:`CfsError` naming it, not a walk that never ends.
    """
    n_files = total_bytes = 0
    newest = 0
    stack: list[tuple[Path, frozenset]] = [(Path(path), frozenset())]
    while stack:
        current, above = stack.pop()
        st = _stat(current)
        newest = max(newest, st.st_mtime_ns)
        if not stat.S_ISDIR(st.st_mode):
            n_files, total_bytes = n_files + 1, total_bytes + st.st_size
            continue
        here = (st.st_dev, st.st_ino)
        if here in above:
            raise CfsError(f"{current} is a symlink loop (it leads back to a folder above it); remove the link")
        try:
            with os.scandir(current) as entries:
                children = [Path(entry.path) for entry in entries]
        except OSError as exc:
            raise CfsError(f"cannot list {current}: {exc.strerror or exc}") from None
        for child in children:
            stack.append((child, above | {here}))
    return {"files": n_files, "bytes": total_bytes, "mtime_ns": newest}


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        why = "is a symlink loop" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror or exc})"
        raise CfsError(f"{path} {why}; fix or remove it") from None


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


def checksum(payload: dict[str, Any]) -> str:
    """sha256 of everything an entry stores (metadata and every tensor's dtype, shape and
    bytes), so a truncated or flipped byte is found even where ``torch.load`` still succeeds."""
    h = hashlib.sha256()
    for key in sorted(payload):
        if key == "sha256":
            continue
        value = payload[key]
        h.update(key.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().data if t.numel() else b"")
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()


def save_split(split: DataSplit, path: Path) -> None:
    """Write ``split`` to ``path`` atomically: a temp file in the same folder, then
    ``os.replace``, so a crash or a concurrent run never leaves a half-written entry behind.
    The entry records the :func:`checksum` of what it holds."""
    payload: dict[str, Any] = {"version": FORMAT_VERSION, "name": split.name,
                               "mean": list(split.mean), "std": list(split.std)}
    for part in _PARTS:
        data: ArrayDataset = getattr(split, part)
        payload[f"{part}_x"] = data.x.contiguous()
        payload[f"{part}_y"] = data.y.contiguous()
        payload[f"{part}_class_names"] = list(data.class_names)
    payload["sha256"] = checksum(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_split(path: Path) -> DataSplit:
    """Read an entry written by :func:`save_split`; ``ValueError`` when it is not one or its
    content does not match its checksum."""
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as exc:
        raise ValueError(f"it cannot be read: truncated or not a cache file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"it has format {payload.get('version') if isinstance(payload, dict) else '?'}, "
                         f"not {FORMAT_VERSION}")
    if payload.get("sha256") != checksum(payload):
        raise ValueError("its content does not match its checksum")
    parts = {
        part: ArrayDataset(payload[f"{part}_x"], payload[f"{part}_y"],
                           list(payload[f"{part}_class_names"]))
        for part in _PARTS
    }
    return DataSplit(payload["name"], parts["train"], parts["test"],
                     tuple(payload["mean"]), tuple(payload["std"]))


def warn(message: str) -> None:
    """A one-line warning on stderr (the run goes on)."""
    print(f"cfs: warning: {' '.join(message.split())}", file=sys.stderr)


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
        except Exception as exc:  # truncated, corrupt or foreign file: rebuild it below
            reason = " ".join(str(exc).split())[:120] or type(exc).__name__
            warn(f"cache entry {path} is damaged ({reason}); rebuilding it")
    split = build()
    try:
        save_split(split, path)
        for stale in path.parent.glob(f"{prefix}*.pt"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as exc:
        warn(f"could not write cache entry {path} ({exc.strerror or exc}); the data is decoded again next time")
    return split
