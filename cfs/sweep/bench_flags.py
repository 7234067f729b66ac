"""Every ``cfs bench`` flag, carried through ``cfs sweep`` to each run.

The flags are taken from ``cfs bench``'s own parser, so a flag added to ``cfs bench`` is a
``cfs sweep`` flag too, with the same help, type and check. The flags that place a run in the
grid (scenario, strategy, seed, options) or in a folder (out, resume, overwrite) belong to the
sweep instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cfs.commands import bench
from cfs.errors import CfsError

#: ``cfs bench`` destinations that ``cfs sweep`` sets itself, per run.
OWNED_BY_SWEEP = frozenset({"help", "plugins", "scenario", "strategies", "seed", "option_args", "out", "resume",
                            "overwrite", "no_progress"})
#: Flags holding a path: made absolute, since a run may start in another working directory.
PATH_FLAGS = frozenset({"config", "data_root", "weights"})


def bench_parser() -> argparse.ArgumentParser:
    """A private ``cfs bench`` parser (its errors are one-line :class:`CfsError`)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-p", dest="plugins", action="append", default=[])
    subparsers = argparse.ArgumentParser(add_help=False).add_subparsers()
    bench.add_parser(subparsers, parent)
    return subparsers.choices[bench.NAME]


def passthrough_actions() -> list[argparse.Action]:
    """``cfs bench``'s actions that every run of a sweep shares."""
    return [a for a in bench_parser()._actions if a.dest not in OWNED_BY_SWEEP and a.option_strings]


def add_passthrough(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Add the shared ``cfs bench`` flags to ``parser`` in their own help group."""
    group = parser.add_argument_group("cfs bench flags, given to every run of the sweep")
    actions = passthrough_actions()
    for action in actions:
        group._add_action(action)
    return actions


def to_argv(values: argparse.Namespace, actions: list[argparse.Action]) -> list[str]:
    """The flags that reproduce ``values`` (unset ones left out, paths made absolute)."""
    argv: list[str] = []
    for action in actions:
        value: Any = getattr(values, action.dest, None)
        if value is None or value is False or value == []:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:
            argv.append(flag)
            continue
        for v in value if isinstance(action, argparse._AppendAction) else [value]:
            argv += [flag, str(Path(v).expanduser().absolute()) if action.dest in PATH_FLAGS else str(v)]
    return argv


def normalise(argv: list[str], where: str) -> list[str]:
    """Shared flags from several sources (grid file, then command line: later wins) as one
    clean list; an unknown or malformed flag is a one-line error."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    actions = passthrough_actions()
    for action in actions:
        parser._add_action(action)

    def error(message: str) -> None:
        raise CfsError(f"{where}: {' '.join(message.split())} (see cfs sweep --help)")

    parser.error = error  # type: ignore[method-assign]
    return to_argv(parser.parse_args(argv), actions)
