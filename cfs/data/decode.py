"""Decode a list of image files into one uint8 array, in parallel, with a progress bar.

The first image fixes the row shape (after the optional square resize); the others are
decoded by a pool of threads, one per available core (torchvision's decoders release the
GIL), and written straight into their row: of a tensor when the decoded array fits in
memory (:func:`cfs.data.cache.in_memory_limit`), else of a file on disk, with positioned
writes, so an image collection larger than memory is decoded without ever being held
(it comes back as :class:`~cfs.data.diskrows.LazyRows`). Images of another size are
collected and reported together as one :class:`CfsError`.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cfs.data import cache
from cfs.data.diskrows import DiskArray, LazyRows
from cfs.errors import CfsError

_TV_DECODER_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"
CHUNK = 256  # images per task: few enough tasks that scheduling costs nothing


def workers() -> int:
    """The cores this process may use (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resize(img: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """``img`` as ``image_size`` x ``image_size`` (antialiased), unchanged without a size."""
    if image_size is None or tuple(img.shape[1:]) == (image_size, image_size):
        return img
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(img, [image_size, image_size], antialias=True)


def decode_images(paths: Sequence[Path], decode: Callable[[Path], torch.Tensor], image_size: int | None,
                  desc: str, mismatch: Callable[[list[tuple[int, int]]], str]) -> torch.Tensor | LazyRows:
    """``paths`` decoded with ``decode`` (then resized), stacked as ``N x C x H x W`` uint8.

    ``mismatch(sizes)`` words the error when images differ in size (sorted (H, W) pairs).
    """
    if not paths:
        raise CfsError("no images to decode")
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of torchcodec (not a dependency
        # here) and warns on every call; they are still about 3x faster than PIL.
        warnings.filterwarnings("ignore", _TV_DECODER_DEPRECATION, DeprecationWarning)
        first = resize(decode(paths[0]), image_size).contiguous()
        shape = tuple(first.shape)
        row_bytes = first.numel()
        total = row_bytes * len(paths)
        on_disk = total > cache.in_memory_limit()
        if on_disk:
            target, fd = cache.spill_file(), None
            fd = os.open(target, os.O_WRONLY)
            os.ftruncate(fd, total)
            rows: torch.Tensor | None = None
        else:
            target, rows = None, torch.empty((len(paths), *shape), dtype=torch.uint8)
        other_sizes: set[tuple[int, int]] = set()

        def put(i: int, img: torch.Tensor) -> None:
            if tuple(img.shape) != shape:
                other_sizes.add(tuple(img.shape[1:]))
            elif rows is not None:
                rows[i] = img
            else:
                data = memoryview(np.ascontiguousarray(img.numpy())).cast("B")
                at = i * row_bytes
                while len(data):
                    done = os.pwrite(fd, data, at)
                    data, at = data[done:], at + done

        def run(start: int) -> int:
            stop = min(start + CHUNK, len(paths))
            for i in range(start, stop):
                put(i, first if i == 0 else resize(decode(paths[i]), image_size))
            return stop - start

        try:
            with tqdm(total=len(paths), desc=desc, unit="img", leave=False, disable=None) as bar, \
                    ThreadPoolExecutor(workers(), thread_name_prefix="cfs-decode") as pool:
                pending = {pool.submit(run, start) for start in range(0, len(paths), CHUNK)}
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for job in done:
                        if job.exception() is not None:
                            for other in pending:
                                other.cancel()
                            raise job.exception()
                        bar.update(job.result())
        except BaseException:
            if target is not None:
                os.close(fd)
                Path(target).unlink(missing_ok=True)
            raise
    if other_sizes:
        if target is not None:
            os.close(fd)
            Path(target).unlink(missing_ok=True)
        raise CfsError(mismatch(sorted(other_sizes | {shape[1:]})))
    if rows is not None:
        return rows
    os.fsync(fd)
    os.close(fd)
    return LazyRows.of(DiskArray(target, len(paths), shape, temporary=True))
