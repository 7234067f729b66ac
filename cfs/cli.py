"""The ``cfs`` command. Its subcommands (``bench``, ``list``, ``plugins``, ``report``,
``distill`` and any plugin's) are registered through ``cfs_add_commands``
(:mod:`cfs.commands.base`), so the parser is built from the plugin manager: ``-p MODULE`` and
``-p no:NAME`` are read first, the manager is built once and handed to the command.

Every user error is a :class:`cfs.errors.CfsError`, printed as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cfs.errors import CfsError
from cfs.plugins import CfsPluginManager, get_plugin_manager


def _plugin_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME",
                   help="load plugin module NAME, or block a plugin with no:NAME")
    return p


def plugin_args(argv: Sequence[str]) -> list[str]:
    """The ``-p`` values anywhere on the command line (before or after the subcommand), read
    before the subcommands exist: the plugins decide which subcommands there are."""
    known, _ = _plugin_parent().parse_known_args(list(argv))
    return known.plugins


def build_parser(pm: CfsPluginManager) -> argparse.ArgumentParser:
    """The ``cfs`` parser with one sub-parser per registered command."""
    parent = _plugin_parent()
    parser = argparse.ArgumentParser(prog="cfs", description="continual and few-shot learning benchmarks",
                                     parents=[parent])
    sub = parser.add_subparsers(dest="command", required=True)
    for entry in pm.commands.entries():
        entry.obj.add_parser(sub, parent)
    parser.error = _one_line  # unknown flags and commands: one line, exit 2, like every user error
    return parser


def _one_line(message: str) -> None:
    raise CfsError(f"{' '.join(message.split())} (see cfs --help)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        plugins = plugin_args(argv)
        pm = get_plugin_manager(plugins)
        args = build_parser(pm).parse_args(argv)
        args.plugins, args.plugin_manager = plugins, pm  # every -p, before or after the command
        return pm.commands.get(args.command).run(args)
    except CfsError as exc:
        print(f"cfs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cfs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
