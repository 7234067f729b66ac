"""``cfs sweep``: run a grid of strategies x seeds x scenarios x options on Ray or a local process pool.

Every point is one ``cfs bench`` run with its own run folder under ``--out`` (lock, status,
checkpoints), so a sweep started again skips the finished runs and resumes the interrupted
ones from their checkpoints; ``sweep.json`` and ``sweep.csv`` summarise it and
``cfs report SWEEP_DIR`` aggregates the seeds as mean ± std. Every name and value of every
point is checked before the first run starts.
"""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from cfs.commands.base import plugin_manager
from cfs.errors import CfsError, shown
from cfs.plugins import CfsPluginManager
from cfs.sweep.grid import Grid, Point

NAME = "sweep"


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    from cfs.sweep.bench_flags import add_passthrough

    p = subparsers.add_parser(
        NAME, parents=[parent], help="run a grid of cfs bench runs on Ray or a local process pool",
        description="Run every point of a grid (scenarios x strategies x option values x seeds) as one `cfs bench` "
                    "run with its own folder under --out, on Ray (`pip install 'cfs[ray]'`) or on a local process "
                    "pool. Started again on the same --out, finished runs are skipped and interrupted ones resume "
                    "from their checkpoints. `cfs report SWEEP_DIR` shows mean ± std over the seeds.")
    p.add_argument("--grid", metavar="FILE.yaml",
                   help="YAML grid: scenarios, strategies, seeds, options (STRATEGY.KEY: [values]) and bench "
                        "(cfs bench flags); flags given here replace the file's (default: none)")
    p.add_argument("--strategy", dest="sweep_strategies", action="append", metavar="NAME[+NAME]",
                   help="a strategy of the grid; repeat for several, a+b composes (required unless in --grid)")
    p.add_argument("--scenario", dest="sweep_scenarios", action="append", metavar="NAME",
                   help="a scenario of the grid; repeat for several (default: split-digits)")
    p.add_argument("--seeds", metavar="LIST", help="seeds of the grid: 0,1,2 or 0-4 (default: 0)")
    p.add_argument("-o", "--option", dest="option_grid", action="append", default=[], metavar="S.KEY=V1,V2",
                   help="an option axis, e.g. -o replay.mem_size=200,2000; only strategies that include S get it; "
                        "repeat for several (default: each strategy's own)")
    p.add_argument("--out", metavar="SWEEP_DIR", help="sweep folder: one run folder per point, sweep.json, sweep.csv "
                                                      "and logs/ (default: sweeps/<time>-<random>)")
    p.add_argument("--backend", choices=("ray", "local"),
                   help="ray: one Ray task per run; local: a pool of --workers processes "
                        "(default: ray when installed, else local)")
    p.add_argument("--address", help="ray: join this Ray cluster, e.g. ray://host:10001 or auto (default: start a "
                                     "local Ray instance, or use RAY_ADDRESS)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="ray: CPUs each run asks for, fractions allowed; "
                                                                   "also its torch threads (default: 1)")
    p.add_argument("--gpus-per-run", type=float, default=0.0,
                   help="ray: GPUs each run asks for, fractions allowed (e.g. 0.25 for head-only runs on cached "
                        "features) (default: 0)")
    p.add_argument("--workers", type=int, help="local: runs at a time (default: the CPU count)")
    p.add_argument("--retries", type=int, default=2,
                   help="start a run again this many times when its process dies (killed, out of memory); it resumes "
                        "from its checkpoint (default: 2)")
    p.set_defaults(bench_flags=add_passthrough(p))
    p.error = _usage_error  # type: ignore[method-assign]


def _usage_error(message: str) -> None:
    raise CfsError(f"{' '.join(message.split())} (see cfs sweep --help)")


def check_numbers(args: argparse.Namespace, backend: str) -> None:
    """Resource flags: one line each, before any work."""
    if not (math.isfinite(args.cpus_per_run) and args.cpus_per_run > 0):
        raise CfsError(f"--cpus-per-run must be > 0, got {args.cpus_per_run:g}")
    if not (math.isfinite(args.gpus_per_run) and args.gpus_per_run >= 0):
        raise CfsError(f"--gpus-per-run must be >= 0, got {args.gpus_per_run:g}")
    if args.retries < 0:
        raise CfsError(f"--retries must be >= 0, got {args.retries}")
    if args.workers is not None and args.workers < 1:
        raise CfsError(f"--workers must be >= 1, got {args.workers}")
    if backend == "local" and (args.address or args.gpus_per_run):
        raise CfsError(f"{'--address' if args.address else '--gpus-per-run'} is for --backend ray; the local backend "
                       f"runs --workers processes on this machine")
    if backend == "ray" and args.workers is not None:
        raise CfsError("--workers is for --backend local; Ray runs as many as --cpus-per-run/--gpus-per-run allow")


def choose_backend(args: argparse.Namespace) -> str:
    from cfs.sweep.backends import ray_available

    backend = args.backend or ("ray" if ray_available() else "local")
    if backend == "ray" and not ray_available():
        raise CfsError("--backend ray needs Ray: pip install 'cfs[ray]' (or use --backend local)")
    return backend


def validate_points(points: list[Point], shared: list[str], pm: CfsPluginManager, plugins: list[str]) -> None:
    """Every distinct run config (seeds aside) checked as ``cfs bench`` checks its own before
    any work: names, options, compositions, loggers, scenario kind."""
    from cfs.commands.bench import bench_config, declared_kind
    from cfs.engine.runner import plan_runs
    from cfs.evaluation.loggers import select_loggers
    from cfs.sweep.bench_flags import bench_parser

    parser, seen = bench_parser(), set()
    for point in points:
        key = (point.scenario, point.strategy, point.options)
        if key in seen:
            continue
        seen.add(key)
        ns = parser.parse_args([*shared, *point.bench_argv()])
        ns.plugins = plugins
        cfg = bench_config(ns, pm)
        select_loggers(pm.loggers, cfg.loggers)
        declared_kind(pm.scenarios.get(cfg.scenario), cfg, pm.kinds)
        plan_runs(pm, cfg)


def sweep_folder(args: argparse.Namespace) -> Path:
    out = Path(args.out) if args.out else Path("sweeps") / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise CfsError(f"--out {shown(out)} is a {'symbolic link' if out.is_symlink() else 'file'}; give a folder")
    return out


def check_previous(out: Path, tasks: dict[str, dict[str, Any]]) -> None:
    """A sweep folder is continued only with the same flags for every run it already holds."""
    from cfs.rundir import read_json
    from cfs.sweep.summary import SUMMARY_JSON

    if not out.is_dir() or not any(out.iterdir()):
        return
    previous = read_json(out / SUMMARY_JSON)
    if previous is None:
        raise CfsError(f"--out {shown(out)} is not empty and not a cfs sweep folder (no {SUMMARY_JSON}); choose a "
                       f"new folder (cfs never deletes what it did not write)")
    before = {p.get("name"): p for p in previous.get("points") or [] if isinstance(p, dict)}
    for name, task in tasks.items():
        old = before.get(name)
        if old is not None and (out / name).exists() and old.get("bench_args") != task["bench_args"]:
            raise CfsError(f"--out {shown(out)}: run {name} was started with other cfs bench flags "
                           f"({' '.join(map(str, old.get('bench_args') or []))}); use a new --out or the same flags")


def lock_sweep(out: Path) -> Any:
    """Hold ``SWEEP_DIR/.sweep.lock``: a second sweep on the same folder fails with one line."""
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / ".sweep.lock", "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise CfsError(f"{shown(out)} is being run by another cfs sweep; wait for it or choose another --out") from None
    return handle


def make_backend(backend: str, args: argparse.Namespace, n_runs: int) -> Any:
    from cfs.sweep.backends import LocalBackend, RayBackend

    if backend == "ray":
        return RayBackend(args.address, args.cpus_per_run, args.gpus_per_run, args.retries)
    workers = args.workers or max(1, (os.cpu_count() or 1) // max(1, math.ceil(args.cpus_per_run)))
    return LocalBackend(min(workers, max(1, n_runs)), args.retries)


def run_threads(backend: str, args: argparse.Namespace, workers: int) -> int:
    """Torch threads of each run: its CPU request (Ray), or a fair share of the cores (local)."""
    if backend == "ray":
        return max(1, math.floor(args.cpus_per_run))
    return max(1, (os.cpu_count() or 1) // workers)


def run(args: argparse.Namespace) -> int:
    from cfs.sweep.bench_flags import normalise, to_argv
    from cfs.sweep.grid import build_grid, load_grid_file
    from cfs.sweep.summary import point_record, write_summary
    from cfs.sweep.worker import folder_state

    pm = plugin_manager(args)
    file_values = load_grid_file(args.grid) if args.grid else {}
    grid: Grid = build_grid(file_values, args.sweep_strategies, args.seeds, args.sweep_scenarios, args.option_grid)
    shared = normalise(grid.bench + to_argv(args, args.bench_flags), f"--grid {args.grid} bench")
    backend = choose_backend(args)
    check_numbers(args, backend)
    points = grid.points()
    plugins = list(getattr(args, "plugins", None) or [])
    validate_points(points, shared, pm, plugins)
    out = sweep_folder(args).absolute()
    runner = make_backend(backend, args, len(points))
    threads = run_threads(backend, args, getattr(runner, "workers", 1))
    tasks = {p.name: {"name": p.name, "folder": str(out / p.name), "log": str(out / "logs" / f"{p.name}.log"),
                      "bench_args": [*shared, *p.bench_argv()], "plugins": plugins, "threads": threads}
             for p in points}
    check_previous(out, tasks)
    lock = lock_sweep(out)
    try:
        header = {"command": ["cfs", *sys.argv[1:]], "backend": backend, "address": args.address,
                  "cpus_per_run": args.cpus_per_run, "gpus_per_run": args.gpus_per_run, "retries": args.retries,
                  "grid": {"scenarios": grid.scenarios, "strategies": grid.strategies, "seeds": grid.seeds,
                           "options": grid.options, "bench": shared}, "plugins": plugins, "started": time.time()}
        by_name = {p.name: p for p in points}

        def record(name: str, result: dict[str, Any] | None = None) -> dict[str, Any]:
            task = tasks[name]
            return point_record(by_name[name], Path(task["folder"]), Path(task["log"]), task["bench_args"], result)

        records = {name: record(name) for name in tasks}
        todo = [tasks[n] for n in tasks if folder_state(Path(tasks[n]["folder"])) != "finished"]
        skipped = len(tasks) - len(todo)
        write_summary(out, header, list(records.values()))
        print(f"cfs sweep: {len(tasks)} runs in {shown(out)} on {backend}"
              f"{f' ({skipped} finished before, skipped)' if skipped else ''}", file=sys.stderr)
        started = time.monotonic()

        def done(task: dict[str, Any], result: dict[str, Any]) -> None:
            rec = records[task["name"]] = record(task["name"], result)
            acc = (rec.get("summary") or {}).get("last_accuracy", (rec.get("summary") or {}).get("accuracy"))
            what = f"final accuracy {100 * acc:.1f}%" if isinstance(acc, (int, float)) else rec["status"]
            again = f", resumed {rec['resumed']}x" if rec["resumed"] else ""
            print(f"{task['name']}: {what} ({rec['attempts']} attempt(s){again})"
                  f"{'' if rec['status'] == 'finished' else ': ' + str(rec['error'])}", file=sys.stderr)
            write_summary(out, header, list(records.values()))

        if todo:
            runner.run(todo, done)
        header["seconds"] = time.monotonic() - started
        write_summary(out, header, list(records.values()))
    finally:
        lock.close()
    failed = [r for r in records.values() if r["status"] != "finished"]
    print(f"cfs sweep: {len(records) - len(failed)} of {len(records)} runs finished in {header['seconds']:.1f} s; "
          f"summary in {shown(out / 'sweep.csv')}; compare with: cfs report {shown(out)}", file=sys.stderr)
    if failed:
        print(f"cfs sweep: {len(failed)} run(s) did not finish: "
              + "; ".join(f"{r['name']} ({r['error']}, log {r['log']})" for r in failed), file=sys.stderr)
        return 1
    return 0
