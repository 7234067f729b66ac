"""Registers the first-party subcommands through ``cfs_add_commands``, exactly as a plugin
registers its own; ``cfs.cli`` knows none of them by name."""

from __future__ import annotations

from cfs import hookimpl
from cfs.commands import bench, distill, pretrain, report, sweep
from cfs.commands.base import ModuleCommand
from cfs.commands.listing import ListCommand, PluginsCommand
from cfs.registry import Registry


@hookimpl
def cfs_add_commands(registry: Registry) -> None:
    for command in (ModuleCommand(bench), ListCommand(), PluginsCommand(), ModuleCommand(report), ModuleCommand(distill),
                    ModuleCommand(sweep), ModuleCommand(pretrain)):
        registry.add(command)
