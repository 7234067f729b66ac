"""Rows of a uint8 image array that stays on disk: read in batches, ahead of the loop.

A data set larger than memory is one flat file of decoded rows (``n x C x H x W`` uint8, row
after row; see :mod:`cfs.data.cache`). :class:`DiskArray` reads any rows of it with positioned
reads (``os.preadv``), which go through the page cache and never count towards the process's
memory (unlike pages of a memory map, which count in its resident size and, mapped privately,
in ``RLIMIT_DATA``). :class:`LazyRows` is what an :class:`~cfs.data.arrays.ArrayDataset` holds
instead of a tensor then: a list of row numbers into one or more sources (disk arrays or
tensors), so a class subset, an experience or a data set joined with a memory is a vector of
indices, never a copy of pixels. Indexing it (``rows[idx]``, ``rows[a:b]``) returns a real
tensor on its device.

Read-ahead: the training loops draw batches as consecutive slices ``order[a:b]``,
``order[b:c]``, ... of one permutation. When a :class:`LazyRows` is indexed with such a slice,
it starts reading the next slice of the same permutation in a background thread (into pinned
memory when the rows go to a CUDA device, so the copy is asynchronous); the next call takes
those rows if it asks for them, else reads what it asked for. The loops need no change.
"""

from __future__ import annotations

import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

_READER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cfs-prefetch")


class DiskArray:
    """``n_rows`` rows of ``row_shape`` uint8 pixels stored back to back in ``path`` from
    byte ``offset``; rows are read with positioned reads (thread-safe, one descriptor per
    process)."""

    dtype = torch.uint8

    def __init__(self, path: Path | str, n_rows: int, row_shape: Sequence[int], offset: int = 0,
                 temporary: bool = False) -> None:
        self.path = Path(path)
        self.n_rows = int(n_rows)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.row_bytes = int(np.prod(self.row_shape)) if self.row_shape else 1
        self.offset = int(offset)
        self._fd: int | None = None
        self._pid = -1
        self._lock = threading.Lock()
        #: deletes a temporary file (a decode not adopted by the cache) once nothing reads it
        self._cleanup = weakref.finalize(self, _remove, str(self.path)) if temporary else None

    def adopt(self, path: Path) -> None:
        """The file now lives at ``path`` and is kept (the cache moved it into an entry)."""
        self.path = Path(path)
        if self._cleanup is not None:
            self._cleanup.detach()
            self._cleanup = None

    def __getstate__(self) -> dict[str, Any]:  # a descriptor does not travel to another process
        return {k: v for k, v in self.__dict__.items() if k not in ("_fd", "_lock", "_cleanup")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _fd=None, _pid=-1, _lock=threading.Lock(), _cleanup=None)

    def _descriptor(self) -> int:
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
            return self._fd

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Rows ``rows`` (int64) into ``out`` (``len(rows) x row_bytes`` uint8, C order).
        Runs of consecutive rows are read with one call."""
        fd, size = self._descriptor(), self.row_bytes
        n = len(rows)
        if not n:
            return
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate(([0], breaks))
        stops = np.concatenate((breaks, [n]))
        for a, b in zip(starts.tolist(), stops.tolist()):
            position = self.offset + int(rows[a]) * size
            view = memoryview(out[a:b]).cast("B")
            while len(view):
                got = os.preadv(fd, [view], position)
                if got <= 0:
                    raise OSError(f"{self.path} is shorter than its {self.n_rows} rows; delete it to rebuild it")
                view, position = view[got:], position + got

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _as_index(key: Any, n: int) -> torch.Tensor:
    """``key`` (int, slice, list, bool mask or integer tensor) as int64 row numbers on the CPU."""
    if isinstance(key, slice):
        return torch.arange(n)[key]
    if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.dim() == 0
                                              and not key.dtype == torch.bool):
        key = int(key)
        return torch.tensor([key + (n if key < 0 else 0)])
    key = torch.as_tensor(key)
    if key.dtype == torch.bool:
        return key.cpu().nonzero().flatten()
    key = key.cpu().long()
    return torch.where(key < 0, key + n, key)


class LazyRows:
    """Rows gathered on demand: row ``i`` is row ``where[i]`` of ``sources[which[i]]`` (a
    :class:`DiskArray` or a tensor). Behaves like the tensor it stands for where the data code
    needs it (``shape``, ``dtype``, ``device``, ``len``, indexing, ``to``, ``torch.cat``), and
    subsets and concatenations are index vectors, not pixel copies."""

    def __init__(self, sources: list, which: torch.Tensor, where: torch.Tensor,
                 device: torch.device | str = "cpu") -> None:
        self.sources = list(sources)
        self.which = which.to(torch.int32)
        self.where = where.long()
        self.device = torch.device(device)
        first = self.sources[0]
        self._row_shape = first.row_shape if isinstance(first, DiskArray) else tuple(first.shape[1:])
        self._ahead: tuple | None = None  # (permutation, its version, the rows' index, their read)
        self._cpu_order: tuple | None = None  # (a device permutation, its version, its host copy)
        #: batches served from the read-ahead (for tests and benchmarks)
        self.read_ahead_hits = 0

    @classmethod
    def of(cls, source: DiskArray) -> "LazyRows":
        return cls([source], torch.zeros(source.n_rows, dtype=torch.int32), torch.arange(source.n_rows))

    # -------------------------------------------------------------- what a tensor would say
    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.where), *self._row_shape))

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    def __len__(self) -> int:
        return len(self.where)

    def dim(self) -> int:
        return 1 + len(self._row_shape)

    @property
    def ndim(self) -> int:
        return self.dim()

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.numel()

    def __repr__(self) -> str:
        files = sorted({str(s.path) for s in self.sources if isinstance(s, DiskArray)})
        return f"LazyRows(shape={tuple(self.shape)}, device={self.device}, files={files})"

    # -------------------------------------------------------------- views and gathers
    def subset(self, index: Any) -> "LazyRows":
        """The rows at ``index`` as another view (no pixels read)."""
        idx = _as_index(index, len(self))
        return LazyRows(self.sources, self.which[idx], self.where[idx], self.device)

    def to(self, device: torch.device | str | None = None, *args: Any, **kwargs: Any) -> "LazyRows":
        """The same rows, gathered onto ``device`` when indexed (nothing is read now)."""
        if isinstance(device, torch.dtype) or args or kwargs.get("dtype") is not None:
            raise TypeError("rows on disk are uint8; convert a gathered batch (rows[idx].float())")
        if device is None or torch.device(device) == self.device:
            return self
        return LazyRows(self.sources, self.which, self.where, device)

    def cpu(self) -> "LazyRows":
        return self.to("cpu")

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, tuple):
            return self[key[0]][(slice(None), *key[1:])]
        rows = self._take_ahead(key)
        if rows is None:
            rows = self._gather(_as_index(self._host(key), len(self)), pin=self.device.type == "cuda")
        if rows.device != self.device:
            rows = rows.to(self.device, non_blocking=True)
        single = isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.dim() == 0)
        return rows[0] if single else rows

    def materialize(self) -> torch.Tensor:
        """Every row as one tensor on the device (as much memory as the rows take)."""
        return self[:]

    def _gather(self, idx: torch.Tensor, pin: bool = False) -> torch.Tensor:
        which, where = self.which[idx], self.where[idx]
        out = torch.empty((len(idx), *self._row_shape), dtype=torch.uint8, pin_memory=pin)
        single = len(self.sources) == 1
        for s in [0] if single else which.unique().tolist():
            at = torch.arange(len(idx)) if single else (which == s).nonzero().flatten()
            rows = where if single else where[at]
            source = self.sources[s]
            if isinstance(source, DiskArray):
                order = rows.argsort()  # ascending offsets: runs coalesce, the disk reads forward
                got = np.empty((len(rows), source.row_bytes), dtype=np.uint8)
                source.read(rows[order].numpy(), got)
                out[at[order]] = torch.from_numpy(got).view(len(rows), *self._row_shape)
            else:
                out[at] = source[rows.to(source.device)].cpu().to(torch.uint8)
        return out

    # -------------------------------------------------------------- read-ahead
    def _host(self, key: Any) -> Any:
        """A device index as a host one: a slice of a device permutation is read from one host
        copy of that permutation (one transfer per epoch, not per batch)."""
        if not isinstance(key, torch.Tensor) or key.device.type == "cpu":
            return key
        base = key._base
        if key.dim() == 1 and key.is_contiguous() and base is not None and base.dim() == 1:
            known = self._cpu_order
            if known is None or known[0]() is not base or known[1] != base._version:
                self._cpu_order = known = (weakref.ref(base), base._version, base.cpu())
            start = key.storage_offset() - base.storage_offset()
            return known[2][start : start + len(key)]
        return key.cpu()

    def _take_ahead(self, key: Any) -> torch.Tensor | None:
        """The rows read ahead for ``key`` if it is the slice they were read for (same
        permutation object, unchanged, same rows); then start reading the slice after it."""
        ahead, self._ahead = self._ahead, None
        if not (isinstance(key, torch.Tensor) and key.dim() == 1 and key._base is not None
                and key._base.dim() == 1 and key.is_contiguous() and not key.dtype.is_floating_point
                and key.dtype != torch.bool):
            if ahead is not None:
                ahead[3].cancel()
            return None
        base = key._base
        start = key.storage_offset() - base.storage_offset()
        rows = None
        if ahead is not None:
            ref, version, idx, job = ahead
            if ref() is base and version == base._version and torch.equal(idx, _as_index(self._host(key), len(self))):
                rows = job.result()
                self.read_ahead_hits += 1
            else:
                job.cancel()
        nxt, stop = start + len(key), min(start + 2 * len(key), len(base))
        if nxt < stop:
            idx = _as_index(self._host(base[nxt:stop]), len(self))
            job = _READER.submit(self._gather, idx, self.device.type == "cuda")
            self._ahead = (weakref.ref(base), base._version, idx, job)
        return rows

    # -------------------------------------------------------------- torch functions
    @staticmethod
    def concat(parts: list) -> "LazyRows":
        """Rows of ``parts`` (LazyRows or tensors) one after the other, as one view."""
        sources: list = []
        which, where = [], []
        device = next(p.device for p in parts if isinstance(p, LazyRows))
        for p in parts:
            if isinstance(p, LazyRows):
                ids = torch.tensor([_source_id(sources, s) for s in p.sources], dtype=torch.int32)
                which.append(ids[p.which.long()])
                where.append(p.where)
            else:
                which.append(torch.full((len(p),), _source_id(sources, p), dtype=torch.int32))
                where.append(torch.arange(len(p)))
        return LazyRows(sources, torch.cat(which), torch.cat(where), device)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """Any other torch function sees the gathered tensor (``torch.cat`` of test sets)."""
        def real(a):
            if isinstance(a, LazyRows):
                return a.materialize()
            if isinstance(a, (list, tuple)):
                return type(a)(real(v) for v in a)
            return a

        return func(*real(tuple(args)), **{k: real(v) for k, v in (kwargs or {}).items()})


def _source_id(sources: list, source: Any) -> int:
    for i, known in enumerate(sources):
        if known is source:
            return i
    sources.append(source)
    return len(sources) - 1


def is_lazy(x: Any) -> bool:
    return isinstance(x, LazyRows)
