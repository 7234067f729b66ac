"""Assemble one run (scenario, model, composed strategies) and drive it through its loop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from cfs.config import RunConfig
from cfs.engine.continual import ContinualLoop, Timings
from cfs.engine.devices import memory_format, resolve_device, seed_everything
from cfs.engine.episodic import EpisodicLoop
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.models.backbones import build_backbone
from cfs.models.heads import HEADS
from cfs.models.model import ContinualModel
from cfs.plugins import CfsPluginManager
from cfs.scenarios.base import Scenario
from cfs.strategy import Strategy


#: Scenario kind -> the loop class that drives it (``loop.run()``, ``loop.timings``).
LOOPS: dict[str, Any] = {"class-incremental": ContinualLoop, "fscil": ContinualLoop, "episodic": EpisodicLoop}


@dataclass
class RunResult:
    """What a finished run hands to the result writer."""

    strategy: str
    state: RunState
    timings: Timings
    seconds: float


def strategy_classes(pm: CfsPluginManager, spec: str) -> list[type[Strategy]]:
    """``"replay+lwf"`` -> the registered classes, each name checked."""
    names = [n.strip() for n in spec.split("+") if n.strip()]
    if not names:
        raise CfsError(f"empty strategy name in {spec!r}")
    if len(set(names)) != len(names):
        raise CfsError(f"strategy {spec!r} names a strategy twice")
    return [pm.strategies.get(n) for n in names]


def check_compatible(classes: list[type[Strategy]], kind: str, scenario: str) -> None:
    for cls in classes:
        if kind not in cls.compatibility:
            raise CfsError(
                f"strategy {cls.name!r} does not support {kind} scenarios such as {scenario!r} "
                f"(it supports: {', '.join(sorted(cls.compatibility))})"
            )


def make_strategies(classes: list[type[Strategy]], cfg: RunConfig) -> list[Strategy]:
    return [cls(cls.make_options(cfg.options.get(cls.name))) for cls in classes]


def build_model(pm: CfsPluginManager, cfg: RunConfig, scenario: Scenario) -> ContinualModel:
    shape = scenario.input_shape
    options: dict[str, Any] = {}
    if cfg.backbone.startswith("timm:"):
        options = {"pretrained": cfg.pretrained, "weights": cfg.weights}
    size = scenario.transform.resize or shape[-1]
    backbone = build_backbone(pm.backbones, cfg.backbone, in_channels=shape[0], image_size=size, **options)
    head_cls = HEADS[cfg.head]
    return ContinualModel(backbone, head_cls(backbone.out_dim))


def run_strategy(pm: CfsPluginManager, cfg: RunConfig, spec: str, scenario: Scenario,
                 progress: bool = True) -> RunResult:
    """Train and evaluate one (possibly composed) strategy on a built scenario."""
    classes = strategy_classes(pm, spec)
    check_compatible(classes, scenario.kind, scenario.name)
    strategies = make_strategies(classes, cfg)
    device = resolve_device(cfg.device)
    generator = seed_everything(cfg.seed)
    model = build_model(pm, cfg, scenario).to(device)
    fmt = memory_format(cfg.memory_format, model, device, scenario.kind)
    model = model.to(memory_format=fmt)
    state = RunState(config=cfg, scenario=scenario, model=model, device=device, hooks=pm.hook,
                     strategies=strategies, transform=scenario.transform, generator=generator,
                     memory_format=fmt)
    names = []
    for strat in strategies:
        name = f"strategy:{strat.name}"
        pm.register(strat, name=name)
        names.append(name)
    try:
        t0 = time.perf_counter()
        loop = LOOPS[scenario.kind](state, progress=progress)
        loop.run()
        seconds = time.perf_counter() - t0
    finally:
        for name in names:
            pm.unregister(name=name)
    return RunResult(spec, state, loop.timings, seconds)


def validate_names(pm: CfsPluginManager, cfg: RunConfig) -> None:
    """Check every name and option before any work starts (nothing half-done on a typo)."""
    factory = pm.scenarios.get(cfg.scenario)
    kind = getattr(factory, "kind", None)
    if not cfg.backbone.startswith("timm:"):
        pm.backbones.get(cfg.backbone)
    all_names = set()
    for spec in cfg.strategies:
        classes = strategy_classes(pm, spec)
        if kind is not None:
            check_compatible(classes, kind, cfg.scenario)
        all_names |= {c.name for c in classes}
        for cls in classes:
            cls.make_options(cfg.options.get(cls.name))
    for strat in cfg.options:
        if strat not in all_names:
            raise CfsError(f"options given for {strat!r}, which is not among the strategies of this run")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
