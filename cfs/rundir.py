"""Run folders: where a run's status, checkpoints and results live, and the rules that make
sure cfs never loses or mixes results.

* cfs never deletes anything it did not create: an existing non-empty ``--out`` is refused
  unless it is a cfs run folder and ``--overwrite`` is given, and even then only cfs's own
  files are replaced. A symbolic link or a file as ``--out`` is refused.
* Default names cannot collide (time plus a random suffix, created exclusively).
* A lock file makes a second writer to the same run folder fail with one line.
* ``run.json`` says ``status``: ``running`` from the start, ``finished`` when every result
  file is in place (it is written last), ``failed`` with the error and the finished
  experiences' accuracies otherwise.

Every check happens before any training.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from cfs.engine.checkpoint import Checkpointer, CheckpointPolicy
from cfs.errors import CfsError, shown

#: Files and folders a run folder may hold that cfs wrote (kinds and loggers add result files,
#: which are recognised by being listed in run.json's ``files``).
OWN = {"run.json", "config.yaml", "checkpoints", ".lock"}
COMMAND_CONFIG = "config.yaml"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically replace ``path`` with ``data`` (temporary file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder cfs wrote a run into (its run.json names cfs)."""
    info = read_json(path / "run.json") if path.is_dir() else None
    return bool(info) and ("status" in info or "cfs" in (info.get("versions") or {}))


def is_runs_folder(path: Path) -> bool:
    """Whether ``path`` holds the run folders of a multi-strategy command (and nothing foreign)."""
    if not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    subs = [p for p in entries if p.is_dir()]
    foreign = [p for p in entries if p.is_file() and p.name != COMMAND_CONFIG]
    return bool(subs) and not foreign and all(is_run_folder(p) for p in subs)


def default_run_dir(scenario: str, strategy: str, root: str | Path = "runs") -> Path:
    """``runs/<time>-<scenario>-<strategy>-<random>``: parallel runs never share a name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{scenario}-{strategy}-{secrets.token_hex(3)}"


def check_out(path: Path, overwrite: bool, multi: bool) -> None:
    """Refuse an ``--out`` that cfs may not write into, before any work."""
    if path.is_symlink():
        raise CfsError(f"--out {shown(path)} is a symbolic link; give a real folder")
    if path.exists() and not path.is_dir():
        raise CfsError(f"--out {shown(path)} is a file, not a folder")
    if not path.exists() or not any(path.iterdir()):
        return
    ours = is_runs_folder(path) if multi else is_run_folder(path)
    if not ours:
        raise CfsError(f"--out {shown(path)} is not empty and not a cfs {'folder of runs' if multi else 'run folder'}; "
                       f"choose a new folder (cfs never deletes what it did not write)")
    if not overwrite:
        raise CfsError(f"--out {shown(path)} already holds a cfs run; pass --overwrite to replace it, "
                       f"or --resume {shown(path)} to continue it")


class RunFolder:
    """One run's folder, locked for writing while this process owns it."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = Path(path)
        self.fresh = fresh  # a default name: created exclusively
        self._lock: Any = None

    @property
    def info(self) -> dict[str, Any]:
        return read_json(self.path / "run.json") or {}

    @property
    def status(self) -> str | None:
        return self.info.get("status") if (self.path / "run.json").exists() else None

    def checkpointer(self, policy: CheckpointPolicy) -> Checkpointer:
        return Checkpointer(self.path / "checkpoints", policy)

    def lock(self) -> "RunFolder":
        """Create the folder and hold its lock; a second writer fails with one line."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise CfsError(f"{shown(self.path)} is being written by another cfs process; wait for it or choose "
                           f"another --out") from None
        self._lock = handle
        return self

    def release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None
            (self.path / ".lock").unlink(missing_ok=True)

    def clear_own(self) -> None:
        """Remove what cfs wrote here (``--overwrite``, or a restart): its own names and the
        result files run.json lists; anything else stays."""
        listed = set(self.info.get("files") or [])
        for entry in self.path.iterdir():
            if entry.name == ".lock":
                continue
            if entry.name in OWN or entry.name in listed or entry.name.startswith(".results-"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()

    def start(self, info: dict[str, Any], config: dict[str, Any], resumed: dict[str, Any] | None = None) -> None:
        """``run.json`` with status ``running`` and the resolved ``config.yaml``, before training."""
        previous = self.info
        history = list(previous.get("resumed") or [])
        if resumed is not None:
            history.append(resumed)
        (self.path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        write_json(self.path / "run.json", {**info, "status": "running", "started": time.time(),
                                           **({"resumed": history} if history else {})})

    def fail(self, error: str, partial: dict[str, Any] | None = None) -> None:
        """Record a failed run: the error and what it finished (``partial``)."""
        info = self.info
        info.update({"status": "failed", "error": error, **({"partial": partial} if partial else {})})
        write_json(self.path / "run.json", info)


def describe_environment(config: Any = None) -> dict[str, Any]:
    """What a run's numbers depend on beyond its config: threads and determinism settings."""
    import torch

    deterministic = bool(getattr(config, "deterministic", False)) or torch.are_deterministic_algorithms_enabled()
    return {"threads": torch.get_num_threads(), "deterministic": deterministic, "command": sys.argv[1:]}


def plan_folders(specs: list[str], out: str | None, scenario: str, overwrite: bool = False,
                 resume: Path | None = None) -> dict[str, RunFolder]:
    """The run folder of every strategy of a command, every check done and nothing created.

    One strategy: the folder is ``out`` itself; several: ``out/<strategy>`` each. Without
    ``out``, each gets a fresh default folder under ``runs/``."""
    multi = len(specs) > 1
    if resume is not None:
        root = Path(resume)
        return {spec: RunFolder(root / spec if multi else root) for spec in specs}
    if out:
        root = Path(out)
        check_out(root, overwrite, multi)
        return {spec: RunFolder(root / spec if multi else root) for spec in specs}
    return {spec: RunFolder(default_run_dir(scenario, spec), fresh=True) for spec in specs}


def lock_folders(folders: dict[str, RunFolder], resume: bool = False) -> None:
    """Create and lock every planned folder (a second writer fails here with one line); a
    new or overwritten folder loses what cfs wrote there before."""
    locked: list[RunFolder] = []
    try:
        for folder in folders.values():
            if folder.fresh:
                folder.path.parent.mkdir(parents=True, exist_ok=True)
                folder.path.mkdir()  # exclusive: a collision is an error, never a shared folder
            locked.append(folder.lock())
            if not resume:
                folder.clear_own()
    except BaseException:
        for folder in locked:
            folder.release()
        raise
