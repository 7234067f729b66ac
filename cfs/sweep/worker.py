"""One point of a sweep, run in the current process through ``cfs bench`` itself.

:func:`execute` is what a Ray task or a local pool process runs. It decides at the moment it
starts (so a retried task decides again) what the run folder needs:

* ``finished`` (run.json says so): nothing, the run is skipped;
* a run.json of an unfinished run (killed, interrupted, failed): ``cfs bench --resume``, which
  continues from the last checkpoint, or starts again when none was written;
* nothing, or only files cfs writes before run.json (a kill in the first instant): a fresh
  ``cfs bench ... --out FOLDER``.

The run's output goes to its log file (appended, one header line per attempt), so concurrent
runs never interleave on the sweep's terminal.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cfs.rundir import OWN, RunFolder, read_json

#: A log line that starts every attempt of a run (counted by the sweep summary).
ATTEMPT_MARK = "== cfs sweep attempt"


def folder_state(folder: Path) -> str:
    """``finished``, ``resume`` (an unfinished run.json) or ``fresh``."""
    info = read_json(folder / "run.json") if (folder / "run.json").is_file() else None
    if info is not None:
        return "finished" if info.get("status") == "finished" else "resume"
    return "fresh"


def clear_unstarted(folder: Path) -> None:
    """A folder a killed run left before its run.json holds only cfs's own files: remove them
    (under the run's lock, so a live writer is never disturbed) so ``--out`` accepts it."""
    if folder.is_dir() and any(folder.iterdir()) and all(p.name in OWN for p in folder.iterdir()):
        run = RunFolder(folder).lock()
        try:
            run.clear_own()
        finally:
            run.release()


@contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def command(task: dict[str, Any], state: str) -> list[str]:
    """The ``cfs`` argv of this attempt (``--resume`` reloads the run's recorded -p modules)."""
    folder = str(task["folder"])
    if state == "resume":
        return ["bench", "--no-progress", "--resume", folder]
    plugins = [arg for name in task.get("plugins") or [] for arg in ("-p", name)]
    return [*plugins, "bench", "--no-progress", *task["bench_args"], "--out", folder]


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one point (``task``: ``name``, ``folder``, ``log``, ``bench_args``, ``plugins``,
    ``threads``) and return its exit code; never raises for a failing run."""
    from cfs.cli import main

    folder, log = Path(task["folder"]), Path(task["log"])
    state = folder_state(folder)
    if state == "finished":
        return {"name": task["name"], "rc": 0, "state": state, "pid": os.getpid()}
    log.parent.mkdir(parents=True, exist_ok=True)
    with output_to(log):
        print(f"{ATTEMPT_MARK} pid {os.getpid()} at {time.strftime('%Y-%m-%d %H:%M:%S')} ({state})", flush=True)
        try:
            if state == "fresh":
                clear_unstarted(folder)
            argv = command(task, state)
            print("cfs " + " ".join(argv), flush=True)
            if task.get("threads"):
                import torch

                torch.set_num_threads(int(task["threads"]))
            sys.argv = ["cfs", *argv]  # run.json records the command of the run
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - the run failed; its traceback goes to its log
            traceback.print_exc()
            rc = 1
    return {"name": task["name"], "rc": rc, "state": state, "pid": os.getpid()}


def process_main(task: dict[str, Any]) -> None:
    """Entry point of a local pool process: the run's exit code is the process's."""
    sys.exit(execute(task)["rc"])
