"""Checkpoints of a run in progress: everything needed to continue it bit for bit.

A checkpoint is a dict of tensors and plain data (``torch.load(weights_only=True)`` reads it;
nothing in it can run code): model, optimizer, scheduler and GradScaler states, every
composed strategy's ``state_dict()``, every random number generator (torch CPU and CUDA,
numpy, Python, the run's generator), the metrics and timings so far and the loop position.
Files are written to a temporary name, fsynced and renamed, so a kill during a write leaves
the previous checkpoint intact; the two newest are kept, and loading falls back to the older
one when the newest is unreadable.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfs.errors import CfsError

FORMAT = 1
KEEP = 2


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
    """When a loop writes a checkpoint besides every experience boundary (continual) or
    validation (episodic): every ``epochs`` epochs and whenever ``minutes`` have passed since
    the last one (0 turns either off)."""

    epochs: int = 0
    minutes: float = 10.0


class Checkpointer:
    """Writes and reads the checkpoints of one run in ``folder``."""

    def __init__(self, folder: Path, policy: CheckpointPolicy | None = None) -> None:
        self.folder = Path(folder)
        self.policy = policy or CheckpointPolicy()
        self.last_write = time.monotonic()
        self.count = 0

    def due(self, epochs_done: int) -> bool:
        """Whether an epoch-level checkpoint is due after ``epochs_done`` epochs of an experience."""
        p = self.policy
        if p.epochs and epochs_done % p.epochs == 0:
            return True
        return self.due_by_time()

    def due_by_time(self) -> bool:
        """Whether the policy's minutes have passed since the last checkpoint."""
        p = self.policy
        return bool(p.minutes) and time.monotonic() - self.last_write >= 60 * p.minutes

    def files(self) -> list[Path]:
        """Existing checkpoints, newest first."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.glob("ckpt-*.pt") if p.stem[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.stem[5:]), reverse=True)

    def write(self, payload: dict[str, Any]) -> Path:
        """Write ``payload`` atomically as the newest checkpoint; keep the :data:`KEEP` newest."""
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = self.files()
        number = int(existing[0].stem[5:]) + 1 if existing else 1
        path = self.folder / f"ckpt-{number:06d}.pt"
        tmp = self.folder / f".{path.name}.tmp"
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.folder)
        for old in existing[KEEP - 1:]:
            old.unlink(missing_ok=True)
        self.last_write = time.monotonic()
        self.count += 1
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
            raise CfsError(f"no readable checkpoint in {self.folder} ({'; '.join(errors)})")
        return None

    def clear(self) -> None:
        """Remove the checkpoints (a finished run no longer needs them)."""
        for path in self.files():
            path.unlink(missing_ok=True)
        for tmp in self.folder.glob(".ckpt-*.tmp") if self.folder.is_dir() else []:
            tmp.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
