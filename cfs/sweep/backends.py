"""Where the points of a sweep run: Ray tasks, or a local pool of processes.

Both run :func:`cfs.sweep.worker.execute` once per point in a process of its own (a Ray
worker serves one task, ``max_calls=1``; the local pool starts one process per run), so every
run starts as cleanly as a ``cfs bench`` from the shell. A run whose process dies (killed,
out of memory, a lost node) is started again, up to ``retries`` times; the new attempt finds
the run's checkpoint and resumes from it. A run that fails by itself (its exit code) is not
retried: it would fail the same way.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable

from cfs.errors import CfsError
from cfs.sweep.worker import execute, process_main

Task = dict[str, Any]
Done = Callable[[Task, dict[str, Any]], None]


def ray_available() -> bool:
    """Whether the optional extra ``ray`` is installed (without importing it)."""
    return importlib.util.find_spec("ray") is not None


class LocalBackend:
    """``workers`` runs at a time, each in a new process (``spawn``: no state of this process
    is inherited); a process killed by a signal is started again, up to ``retries`` times."""

    name = "local"

    def __init__(self, workers: int, retries: int) -> None:
        self.workers, self.retries = workers, retries
        self._stop = threading.Event()
        self._live: set[Any] = set()
        self._lock = threading.Lock()

    def _run_one(self, task: Task) -> dict[str, Any]:
        ctx = multiprocessing.get_context("spawn")
        signals = []
        for _ in range(self.retries + 1):
            if self._stop.is_set():
                return {"name": task["name"], "rc": None, "error": "the sweep was interrupted"}
            proc = ctx.Process(target=process_main, args=(task,), name=f"cfs-sweep {task['name']}")
            with self._lock:
                proc.start()
                self._live.add(proc)
            proc.join()
            with self._lock:
                self._live.discard(proc)
            if proc.exitcode is not None and proc.exitcode >= 0:
                return {"name": task["name"], "rc": proc.exitcode, "pid": proc.pid}
            signals.append(-(proc.exitcode or 0))
        return {"name": task["name"], "rc": None,
                "error": f"its process was killed {len(signals)} times (signals {signals}); --retries {self.retries}"}

    def run(self, tasks: list[Task], done: Done) -> None:
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="cfs-sweep")
        try:
            futures = {pool.submit(self._run_one, task): task for task in tasks}
            for future in as_completed(futures):
                done(futures[future], future.result())
        except BaseException:
            self._stop.set()
            with self._lock:
                for proc in self._live:
                    proc.terminate()  # cfs bench records the interruption; --resume continues it
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class RayBackend:
    """One Ray task per run, with ``cpus``/``gpus`` (fractions allowed) per task; Ray's
    ``max_retries`` starts a task again when its worker dies. Starts a local Ray instance
    unless ``address`` names a cluster (or Ray is already initialised in this process, which
    is then left running)."""

    name = "ray"

    def __init__(self, address: str | None, cpus: float, gpus: float, retries: int) -> None:
        self.address, self.cpus, self.gpus, self.retries = address, cpus, gpus, retries

    def _connect(self) -> bool:
        """Initialise Ray; return whether this call started it (and must shut it down)."""
        import logging

        import ray

        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if self.address is None:
            kwargs["include_dashboard"] = False
        try:
            ray.init(address=self.address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise CfsError(f"cannot start or join Ray{f' at {self.address}' if self.address else ''}: "
                           f"{' '.join(str(exc).split())[:300]}") from None
        return True

    def _check_resources(self) -> None:
        import ray

        have = ray.cluster_resources()
        for what, need, flag in (("CPU", self.cpus, "--cpus-per-run"), ("GPU", self.gpus, "--gpus-per-run")):
            if need > have.get(what, 0.0):
                raise CfsError(f"{flag} {need:g}: the Ray cluster has {have.get(what, 0.0):g} {what}s, so no run "
                               f"could ever start; ask for less")

    def run(self, tasks: list[Task], done: Done) -> None:
        import ray

        started = self._connect()
        pending: dict[Any, Task] = {}
        try:
            self._check_resources()
            remote = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
                                max_calls=1)(execute)
            pending = {remote.remote(task): task for task in tasks}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                        result = {"name": task["name"], "rc": None,
                                  "error": f"Ray lost its task after {self.retries} retries: {first.strip()[:300]}"}
                    done(task, result)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()
