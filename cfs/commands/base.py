"""The subcommand contract: what ``cfs_add_commands`` registers and ``cfs.cli`` dispatches to.

A command is any object with ``name``, ``add_parser(subparsers, parent)`` (add its
``argparse`` sub-parser; ``parent`` carries the ``-p`` plugin option) and ``run(args) -> int``
(the exit code). A module written in that shape (``NAME``, ``add_parser``, ``run``) registers
itself with :class:`ModuleCommand`::

    @hookimpl
    def cfs_add_commands(registry):
        registry.add(ModuleCommand(sys.modules[__name__]))

``cfs.cli`` builds the plugin manager once, before parsing, and hands it to the command as
``args.plugin_manager`` (:func:`plugin_manager`).
"""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any

from cfs.plugins import CfsPluginManager, get_plugin_manager


class ModuleCommand:
    """A subcommand defined by a module's ``NAME``, ``add_parser`` and ``run``; its summary
    is the first line of the module's docstring."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.name: str = module.NAME
        doc = (module.__doc__ or "").strip()
        self.summary = doc.splitlines()[0] if doc else ""

    def add_parser(self, subparsers: Any, parent: argparse.ArgumentParser) -> Any:
        return self.module.add_parser(subparsers, parent)

    def run(self, args: argparse.Namespace) -> int:
        return self.module.run(args)


def plugin_manager(args: argparse.Namespace) -> CfsPluginManager:
    """The manager ``cfs.cli`` built for this command line, or a new one from ``args.plugins``
    when a command is run without the CLI."""
    pm = getattr(args, "plugin_manager", None)
    return pm if pm is not None else get_plugin_manager(getattr(args, "plugins", None) or [])
