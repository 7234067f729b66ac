"""The plugin manager: built-in plugins, entry points (group ``cfs``), blocking.

Modelled on pytest and tox: first-party methods ship in the ``cfs`` distribution itself but
are registered through the same ``cfs`` entry-point group a third-party package uses.
``CFS_DISABLE_PLUGIN_AUTOLOAD=1`` skips the entry points of every *other* distribution,
``-p no:NAME`` blocks one plugin by name and ``-p MODULE`` loads a module explicitly.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterable, Iterator

import pluggy

from cfs import hookspec
from cfs.composition import label, validated
from cfs.errors import CfsError
from cfs.registry import Registry
from cfs.strategy import Strategy

#: Core modules that register scenarios and backbones; always loaded, cannot be blocked.
BUILTIN_MODULES = ("cfs.scenarios.builtin", "cfs.models.backbones", "cfs.models.pretrained", "cfs.models.vit",
                   "cfs.models.lavit", "cfs.losses.distill", "cfs.scenarios.kinds", "cfs.evaluation.loggers",
                   "cfs.commands.subcommands")
FIRST_PARTY_DIST = "cfs"


@dataclass
class PluginInfo:
    """What ``cfs plugins`` shows for one loaded plugin."""

    name: str
    module: str
    distribution: str
    registers: list[str] = field(default_factory=list)


class CfsPluginManager(pluggy.PluginManager):
    """A pluggy manager that knows where each plugin came from and what it registered."""

    def __init__(self) -> None:
        super().__init__("cfs")
        self.add_hookspecs(hookspec)
        self.info: dict[str, PluginInfo] = {}
        self.strategies: Registry = Registry("strategy")
        self.scenarios: Registry = Registry("scenario")
        self.backbones: Registry = Registry("backbone")
        self.kinds: Registry = Registry("scenario kind")
        self.loggers: Registry = Registry("logger")
        self.commands: Registry = Registry("command")
        self.distill_losses: Registry = Registry("distillation loss")

    def parse_hookimpl_opts(self, plugin: Any, name: str):
        """pluggy's parsing, plus the composition rules of strategies (:mod:`cfs.composition`):
        a hook the instance leaves out with its options is not registered, and a declared
        fallback answer runs after every other answer."""
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None or not isinstance(plugin, Strategy):
            return opts
        if name in plugin.inactive_hooks():
            return None
        if name in plugin.fallback_hooks:
            opts = dict(opts, trylast=True, tryfirst=False)
        return opts

    @contextmanager
    def composition(self, strategies: list[Strategy]) -> Iterator[None]:
        """Register a run's strategies (validated, in canonical order) while the block runs.

        pluggy calls the last registered plugin first; registering in reverse canonical order
        makes hooks run in canonical (alphabetical) order."""
        checked = validated(strategies)
        names = []
        try:
            for strat in reversed(checked):
                name = f"strategy:{strat.name}"
                try:
                    self.register(strat, name=name)
                except (pluggy.PluginValidationError, ValueError) as exc:
                    raise CfsError(f"{label(strat)}: {exc}".replace("\n", " ")) from exc
                names.append(name)
            yield
        finally:
            for name in names:
                self.unregister(name=name)

    def register_module(self, plugin: ModuleType | Any, name: str, dist: str) -> None:
        if self.is_blocked(name) or self.has_plugin(name):
            return
        self.register(plugin, name=name)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.info[name] = PluginInfo(name, module, dist)

    def collect_registrations(self) -> None:
        """Call the ``cfs_add_*`` hooks plugin by plugin, so each entry knows its owner."""
        for hook_name, registry in (
            ("cfs_add_scenario_kinds", self.kinds),
            ("cfs_add_loggers", self.loggers),
            ("cfs_add_commands", self.commands),
            ("cfs_add_distill_losses", self.distill_losses),
            ("cfs_add_scenarios", self.scenarios),
            ("cfs_add_backbones", self.backbones),
            ("cfs_add_strategies", self.strategies),
        ):
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                registry.current_plugin = impl.plugin_name
                before = set(registry)
                impl.function(registry=registry)
                info = self.info.get(impl.plugin_name)
                if info is not None:
                    info.registers += [f"{registry.kind} {n}" for n in sorted(set(registry) - before)]
            registry.current_plugin = "?"


def _parse_plugin_args(args: Iterable[str]) -> tuple[set[str], list[str]]:
    blocked, extra = set(), []
    for arg in args:
        if arg.startswith("no:"):
            blocked.add(arg[3:])
        else:
            extra.append(arg)
    return blocked, extra


def get_plugin_manager(plugin_args: Iterable[str] = (), autoload: bool | None = None,
                       extra_plugins: Iterable[Any] = ()) -> CfsPluginManager:
    """Build a manager with built-ins, entry points and ``-p`` arguments, then collect what
    every plugin registers. ``plugin_args`` are the values of ``-p`` options; ``extra_plugins``
    are plugin objects (modules or namespaces with ``@hookimpl`` functions) registered like a
    ``-p`` module, for tests (:mod:`cfs.testing`)."""
    pm = CfsPluginManager()
    blocked, extra = _parse_plugin_args(plugin_args)
    for name in blocked:
        pm.set_blocked(name)
    for modname in BUILTIN_MODULES:
        pm.register_module(importlib.import_module(modname), modname.rsplit(".", 1)[-1], FIRST_PARTY_DIST)
    if autoload is None:
        autoload = not os.environ.get("CFS_DISABLE_PLUGIN_AUTOLOAD")
    for ep in md.entry_points(group="cfs"):
        dist = ep.dist.name if ep.dist is not None else "?"
        if not autoload and dist != FIRST_PARTY_DIST:
            continue
        if pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party package must name itself
            raise CfsError(f"plugin {ep.name!r} from {dist} failed to load: {exc}") from exc
        pm.register_module(plugin, ep.name, dist)
    for modname in extra:
        try:
            plugin = importlib.import_module(modname)
        except ImportError as exc:
            raise CfsError(f"-p {modname}: cannot import plugin module ({exc})") from exc
        pm.register_module(plugin, modname, "(-p)")
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or f"extra-{id(plugin)}"
        pm.register_module(plugin, name, "(test)")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or str(exc.plugin)
        raise CfsError(f"plugin {name!r}: {exc}".replace("\n", " ")) from exc
    pm.collect_registrations()
    return pm
