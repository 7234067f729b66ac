"""``cfs report RUN_DIR... [--out DIR]``: compare finished runs as Markdown, HTML and PNG plots.

Runs are labelled by the settings that differ between them, runs that differ only in their
seed are aggregated as mean ± std (the per-seed rows follow; ``seeds.csv`` has the unrounded
numbers), and run folders that are not finished (``run.json`` status) are skipped with one line
each on stderr. A ``cfs sweep`` folder is read like a folder of runs, with a line on how many of
its points finished."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cfs.commands.base import plugin_manager

NAME = "report"


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        NAME, parents=[parent], help="compare result folders: Markdown table, HTML page and PNG plots",
        description="Compare finished runs. Each run is labelled by the settings that differ between the runs "
                    "(strategy, backbone, epochs, options, seed, ...), shown as columns; runs that differ only in "
                    "their seed are one row, mean ± sample standard deviation, followed by the per-seed rows. "
                    "Values that were not measured are blank; seeds.csv holds each seed group's mean and std unrounded. "
                    "Unfinished run folders are skipped with one line each on stderr; for a `cfs sweep` folder the "
                    "report also says which of its points did not finish.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a folder written by `cfs bench`, a folder of such folders (hidden ones are ignored) or a "
                        "`cfs sweep` folder")
    p.add_argument("--out", default="report", help="folder for report.md, report.html, seeds.csv and the plots (default: report)")


def run(args: argparse.Namespace) -> int:
    from cfs.evaluation.report import write_report

    paths = write_report(args.run_dirs, Path(args.out), plugin_manager(args).kinds)
    print(paths["markdown"].read_text())
    print(f"report: {paths['html']}", file=sys.stderr)
    return 0
