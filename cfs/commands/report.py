"""``cfs report RUN_DIR... [--out DIR]``: compare finished runs as Markdown, HTML and PNG plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cfs.commands.base import plugin_manager

NAME = "report"


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(NAME, parents=[parent], help="compare result folders: Markdown table, HTML page and PNG plots")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a folder written by `cfs bench` (or a folder of such folders)")
    p.add_argument("--out", default="report", help="folder for report.md, report.html and the plots (default report)")


def run(args: argparse.Namespace) -> int:
    from cfs.evaluation.report import write_report

    paths = write_report(args.run_dirs, Path(args.out), plugin_manager(args).kinds)
    print(paths["markdown"].read_text())
    print(f"report: {paths['html']}", file=sys.stderr)
    return 0
