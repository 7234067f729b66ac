"""``cfs list`` (what can be named on the command line) and ``cfs plugins`` (who registered it)."""

from __future__ import annotations

import argparse
from typing import Any

from cfs.commands.base import plugin_manager


class ListCommand:
    """List scenarios, scenario kinds, strategies, backbones and loggers."""

    name = "list"

    def add_parser(self, subparsers: Any, parent: argparse.ArgumentParser) -> None:
        subparsers.add_parser(self.name, parents=[parent], help="list scenarios, kinds, strategies, backbones and loggers")

    def run(self, args: argparse.Namespace) -> int:
        pm = plugin_manager(args)
        for title, registry in (("scenarios", pm.scenarios), ("scenario kinds", pm.kinds),
                                ("strategies", pm.strategies), ("backbones", pm.backbones), ("loggers", pm.loggers)):
            print(f"{title}:")
            entries = registry.entries()
            width = max((len(e.name) for e in entries), default=0)
            for e in entries:
                print(f"  {e.name.ljust(width)}  {e.summary}")
            if registry is pm.backbones:
                print(f"  {'timm:<model>'.ljust(width)}  any timm model by name (e.g. timm:resnet18)")
        return 0


class PluginsCommand:
    """List loaded plugins and what each registers."""

    name = "plugins"

    def add_parser(self, subparsers: Any, parent: argparse.ArgumentParser) -> None:
        subparsers.add_parser(self.name, parents=[parent], help="list loaded plugins and what they register")

    def run(self, args: argparse.Namespace) -> int:
        for info in plugin_manager(args).info.values():
            what = ", ".join(info.registers) or "hooks only"
            print(f"{info.name} ({info.distribution}; {info.module}): {what}")
        return 0
