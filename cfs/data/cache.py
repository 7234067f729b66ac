"""A disk cache of decoded data sets, so that only the first run pays for decoding images.

Decoding 60,000 CIFAR-10 JPEGs takes seconds on every run; loading the same pixels back as
one ``torch.save`` file takes a fraction of that. An entry is keyed by what it was built from
(loader, source path, the files' count, total size and newest mtime, loader options), so
editing, adding or removing a source file, or asking for another image size, builds a fresh
entry instead of serving stale pixels. Entries hold only plain tensors, strings and floats and
are read with ``weights_only=True``: a cache file cannot run code. Each entry records a sha256
of its content; an entry that is truncated or does not match it is rebuilt, with a one-line
warning on stderr.

Data larger than memory: when a decoded array exceeds :func:`in_memory_limit`, the decoder
writes it to a flat uint8 file (row after row) instead of a tensor, and the entry is the
``.pt`` file (labels, names, statistics, the file's sha256) plus that ``<entry>.<part>.u8``
file beside it. Such parts load as :class:`~cfs.data.diskrows.LazyRows`, read batch by batch;
a part that fits in memory on the machine that loads it is read into a tensor.
"""

from __future__ import annotations

import contextvars
import errno
import hashlib
import json
import os
import resource
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.data.diskrows import DiskArray, LazyRows
from cfs.errors import CfsError

# Bumped whenever what a loader builds changes, so entries written by older code are not reused.
FORMAT_VERSION = 2  # 2: entries record a checksum of their content
_PARTS = ("train", "test")


def cache_dir() -> Path:
    """``$CFS_CACHE_DIR`` if set, else ``~/.cache/cfs``: one place per user, overridable for tests
    and for machines where the home folder is small."""
    env = os.environ.get("CFS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cfs"


def in_memory_limit() -> int:
    """Bytes of decoded pixels held in memory; larger arrays stay on disk.

    ``$CFS_IN_MEMORY_MAX_BYTES`` if set, else a quarter of what this process may use: the
    smallest of physical memory, its ``RLIMIT_DATA`` / ``RLIMIT_AS`` and its cgroup's
    ``memory.max`` (so a capped job keeps room for the model, the batches and the copies a
    run makes of test data)."""
    env = os.environ.get("CFS_IN_MEMORY_MAX_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise CfsError(f"CFS_IN_MEMORY_MAX_BYTES must be a number of bytes, not {env!r}") from None
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for which in (resource.RLIMIT_DATA, resource.RLIMIT_AS):
        soft = resource.getrlimit(which)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    try:
        cgroup = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if cgroup.isdigit():
            limits.append(int(cgroup))
    except OSError:
        pass
    return min(limits) // 4


_SPILL_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("cfs_spill_dir", default=None)


def spill_file() -> Path:
    """A new empty file for decoded pixels that do not fit in memory: in the cache folder while
    an entry is being built (it becomes part of the entry), else in the temp folder (deleted
    when no data set reads it any more)."""
    folder = _SPILL_DIR.get()
    for where in ([folder] if folder is not None else []) + [Path(tempfile.gettempdir())]:
        try:
            where.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=where, prefix="decoding-", suffix=".u8.tmp")
            os.close(fd)
            return Path(name)
        except OSError:
            continue
    raise CfsError(f"no folder to write decoded images to (tried {folder} and {tempfile.gettempdir()})")


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


def _file_sha256(path: Path, chunk: int = 1 << 23) -> str:
    """sha256 of a file, read in 8 MiB chunks (page cache, not this process's memory)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _disk_array(x: Any) -> DiskArray | None:
    """The file behind ``x`` when ``x`` is all the rows of one decoded file, in order."""
    if not isinstance(x, LazyRows) or len(x.sources) != 1 or not isinstance(x.sources[0], DiskArray):
        return None
    source = x.sources[0]
    if len(x) != source.n_rows or not torch.equal(x.where, torch.arange(source.n_rows)):
        return None
    return source


def _pixel_file(entry: Path, part: str) -> Path:
    return entry.with_name(f"{entry.stem}.{part}.u8")


def save_split(split: DataSplit, path: Path) -> None:
    """Write ``split`` to ``path`` atomically: a temp file in the same folder, then
    ``os.replace``, so a crash or a concurrent run never leaves a half-written entry behind.
    The entry records the :func:`checksum` of what it holds. A part whose pixels were decoded
    to a file (larger than memory) keeps them there: the file moves to ``<entry>.<part>.u8``
    and the entry records its name, shape and sha256."""
    payload: dict[str, Any] = {"version": FORMAT_VERSION, "name": split.name,
                               "mean": list(split.mean), "std": list(split.std)}
    path.parent.mkdir(parents=True, exist_ok=True)
    for part in _PARTS:
        data: ArrayDataset = getattr(split, part)
        disk = _disk_array(data.x)
        if disk is not None:
            target = _pixel_file(path, part)
            if disk.path != target:
                shutil.move(str(disk.path), target)  # a rename within the cache folder
                disk.adopt(target)
            payload[f"{part}_x_file"] = {"file": target.name, "rows": disk.n_rows,
                                         "shape": list(disk.row_shape), "sha256": _file_sha256(target)}
        elif isinstance(data.x, LazyRows):
            raise ValueError(f"the {part} part is a view of other data; save the data it views")
        else:
            payload[f"{part}_x"] = data.x.contiguous()
        payload[f"{part}_y"] = data.y.contiguous()
        payload[f"{part}_class_names"] = list(data.class_names)
    payload["sha256"] = checksum(payload)
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


def _load_pixels(path: Path, described: Any) -> torch.Tensor | LazyRows:
    """The pixel file an entry names, checked against its recorded size and sha256: as a
    tensor when it fits in memory, else as rows read on demand."""
    if not isinstance(described, dict) or not {"file", "rows", "shape", "sha256"} <= set(described):
        raise ValueError("its pixel file is not described")
    file = path.parent / Path(str(described["file"])).name
    shape = [int(v) for v in described["shape"]]
    rows = int(described["rows"])
    size = rows * int(torch.tensor(shape).prod())
    if not file.is_file() or file.stat().st_size != size:
        raise ValueError(f"its pixel file {file.name} is missing or not {size} bytes")
    if _file_sha256(file) != described["sha256"]:
        raise ValueError(f"its pixel file {file.name} does not match its checksum")
    view = LazyRows.of(DiskArray(file, rows, shape))
    return view.materialize() if size <= in_memory_limit() else view


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
    parts = {}
    for part in _PARTS:
        x = payload.get(f"{part}_x")
        if x is None:
            x = _load_pixels(path, payload.get(f"{part}_x_file"))
        parts[part] = ArrayDataset(x, payload[f"{part}_y"], list(payload[f"{part}_class_names"]))
    return DataSplit(payload["name"], parts["train"], parts["test"],
                     tuple(payload["mean"]), tuple(payload["std"]))


def _remove_stale(path: Path, prefix: str) -> None:
    """Delete the other entries built from the same source (and their pixel files)."""
    keep = {path, *(_pixel_file(path, part) for part in _PARTS)}
    for pattern in (f"{prefix}*.pt", f"{prefix}*.u8"):
        for stale in path.parent.glob(pattern):
            if stale not in keep:
                stale.unlink(missing_ok=True)


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
    token = _SPILL_DIR.set(path.parent)  # pixels too large for memory are decoded next to the entry
    try:
        split = build()
    finally:
        _SPILL_DIR.reset(token)
    try:
        save_split(split, path)
        _remove_stale(path, prefix)
    except OSError as exc:
        warn(f"could not write cache entry {path} ({exc.strerror or exc}); the data is decoded again next time")
    return split
