"""Checkpoints of a run in progress: everything needed to continue it bit for bit.

A checkpoint is a dict of tensors and plain data (``torch.load(weights_only=True)`` reads it;
nothing in it can run code): model, optimizer, scheduler and GradScaler states, every
composed strategy's ``state_dict()``, every random number generator (torch CPU and CUDA,
numpy, Python, the run's generator), the metrics and timings so far and the loop position.
Files are written to a temporary name, fsynced and renamed, so a kill during a write leaves
the previous checkpoint intact; the two newest are kept, and loading falls back to the older
one when the newest is unreadable. The payload is copied when a checkpoint is taken and
written by a background thread, so training does not wait for the disk.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfs.errors import CfsError, shown

FORMAT = 1
KEEP = 2


def snapshot(obj: Any) -> Any:
    """A copy of ``obj`` whose tensors are CPU clones: training may go on mutating the originals
    (optimizer moments, memories) while the copy is written."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        items = {k: snapshot(v) for k, v in obj.items()}
        try:
            return type(obj)(items)  # dict, OrderedDict, Counter (a scheduler's milestones)
        except TypeError:
            return items
    if isinstance(obj, list):
        return [snapshot(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(snapshot(v) for v in obj)
    return obj


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random number generator a run draws from, as tensors and plain data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_py = random.getstate()
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.copy()), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "internal": list(internal), "gauss": gauss_py}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy(), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class CheckpointPolicy:
    """When a loop writes a checkpoint: at every experience boundary (continual) or validation
    (episodic) unless the last checkpoint is younger than ``min_seconds`` (a run of seconds is
    cheaper to redo than to checkpoint five times), every ``epochs`` epochs, and whenever
    ``minutes`` have passed since the last one (0 turns any of them off)."""

    epochs: int = 0
    minutes: float = 10.0
    min_seconds: float = 5.0


class Checkpointer:
    """Writes and reads the checkpoints of one run in ``folder``."""

    def __init__(self, folder: Path, policy: CheckpointPolicy | None = None) -> None:
        self.folder = Path(folder)
        self.policy = policy or CheckpointPolicy()
        self.last_write = time.monotonic()
        self.count = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cfs-checkpoint")
        self._pending: Future | None = None

    def wait(self) -> None:
        """Block until the checkpoint being written is on disk (its errors surface here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def due(self, epochs_done: int) -> bool:
        """Whether an epoch-level checkpoint is due after ``epochs_done`` epochs of an experience."""
        p = self.policy
        if p.epochs and epochs_done % p.epochs == 0:
            return True
        return self.due_by_time()

    def due_at_boundary(self) -> bool:
        """Whether to checkpoint at an experience boundary or a validation."""
        p = self.policy
        return not p.min_seconds or time.monotonic() - self.last_write >= p.min_seconds

    def due_by_time(self) -> bool:
        """Whether the policy's minutes have passed since the last checkpoint."""
        p = self.policy
        return bool(p.minutes) and time.monotonic() - self.last_write >= 60 * p.minutes

    def files(self, wait: bool = True) -> list[Path]:
        """Existing checkpoints, newest first."""
        if wait:
            self.wait()
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.glob("ckpt-*.pt") if p.stem[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.stem[5:]), reverse=True)

    def write(self, payload: dict[str, Any]) -> None:
        """Take a checkpoint of ``payload`` now (a copy) and write it in the background as the
        newest file, atomically; the :data:`KEEP` newest are kept."""
        copy = snapshot({"format": FORMAT, **payload})
        self.wait()  # one write at a time, in order
        self.last_write = time.monotonic()
        self.count += 1
        self._pending = self._writer.submit(self._write, copy)

    def _write(self, payload: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = self.files(wait=False)
        number = int(existing[0].stem[5:]) + 1 if existing else 1
        path = self.folder / f"ckpt-{number:06d}.pt"
        tmp = self.folder / f".{path.name}.tmp"
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # the file's content is on disk before the name points at it
        for old in existing[KEEP - 1:]:
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> dict[str, Any] | None:
        """The newest readable checkpoint (``None`` when there is none). An unreadable newest
        file falls back to the previous one; when every file is unreadable, a one-line error."""
        files = self.files()
        errors = []
        for path in files:
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # truncated, corrupt or foreign: try the previous one
                errors.append(f"{path.name}: {type(exc).__name__}")
                continue
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                errors.append(f"{path.name}: not a cfs checkpoint")
                continue
            return data
        if errors:
            raise CfsError(f"no readable checkpoint in {shown(self.folder)} ({'; '.join(errors)})")
        return None

    def clear(self) -> None:
        """Remove the checkpoints (a finished run no longer needs them)."""
        for path in self.files():
            path.unlink(missing_ok=True)
        for tmp in self.folder.glob(".ckpt-*.tmp") if self.folder.is_dir() else []:
            tmp.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

