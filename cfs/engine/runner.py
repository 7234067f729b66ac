"""Assemble one run (scenario, model, composed strategies) and drive it through its loop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from cfs.composition import build_strategies
from cfs.config import RunConfig
from cfs.engine.continual import Timings
from cfs.engine import distributed
from cfs.engine.devices import check_compile, compile_model, memory_format, resolve_device, seed_everything
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.models.backbones import build_backbone
from cfs.models.heads import HEADS
from cfs.models.model import ContinualModel
from cfs.plugins import CfsPluginManager
from cfs.scenarios.base import Scenario
from cfs.strategy import Strategy


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
    """The composition's instances with their options, validated, in canonical order."""
    return build_strategies(classes, cfg.options or {})


def build_model(pm: CfsPluginManager, cfg: RunConfig, scenario: Scenario) -> ContinualModel:
    shape = scenario.input_shape
    options: dict[str, Any] = {}
    if cfg.backbone.startswith("timm:"):
        options = {"pretrained": cfg.pretrained, "weights": cfg.weights}
    elif cfg.weights is not None:  # a registered backbone that loads local files (vit-tiny, efficientnet-lite0, ...)
        import inspect

        if "weights" not in inspect.signature(pm.backbones.get(cfg.backbone)).parameters:
            raise CfsError(f"--weights: backbone {cfg.backbone!r} cannot load a local checkpoint "
                           f"(timm:<model>, efficientnet-lite0/1/2 and vit-tiny/vit-small can); remove it")
        options = {"weights": cfg.weights}
    size = scenario.transform.resize or shape[-1]
    backbone = build_backbone(pm.backbones, cfg.backbone, in_channels=shape[0], image_size=size, **options)
    head_cls = HEADS[cfg.head]
    return ContinualModel(backbone, head_cls(backbone.out_dim))


class RunFailed(CfsError):
    """A run stopped with a user-facing error after it started (divergence): the message is
    the one line to show; ``state`` holds what it finished."""

    def __init__(self, message: str, state: RunState) -> None:
        super().__init__(message)
        self.state = state


def run_strategy(pm: CfsPluginManager, cfg: RunConfig, spec: str, scenario: Scenario,
                 progress: bool = True, strategies: list[Strategy] | None = None,
                 checkpointer: Any = None, resume: dict[str, Any] | None = None) -> RunResult:
    """Train and evaluate one (possibly composed) strategy on a built scenario.

    ``strategies``: the composition's instances made by :func:`plan_runs` (fresh ones are
    made from ``spec`` when omitted). ``checkpointer`` (:class:`cfs.engine.checkpoint.
    Checkpointer`) writes checkpoints as the run goes; ``resume``: a checkpoint to continue."""
    if strategies is None:
        classes = strategy_classes(pm, spec)
        check_compatible(classes, scenario.kind, scenario.name)
        strategies = make_strategies(classes, cfg)
    device = distributed.run_device(resolve_device(cfg.device))
    distributed.init(device)  # several ranks under torchrun: the process group, once
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if getattr(cfg, "deterministic", False):
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True)
    try:
        return _run(pm, cfg, spec, scenario, progress, strategies, checkpointer, resume, device)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _run(pm: CfsPluginManager, cfg: RunConfig, spec: str, scenario: Scenario, progress: bool,
         strategies: list[Strategy], checkpointer: Any, resume: dict[str, Any] | None,
         device: torch.device) -> RunResult:
    generator = seed_everything(cfg.seed)
    model = build_model(pm, cfg, scenario).to(device)
    kind = pm.kinds.get(scenario.kind)  # a cfs.kinds.ScenarioKind: its loop, its memory format
    fmt = memory_format(cfg.memory_format, model, device, kind.channels_last, cfg.amp)
    model = model.to(memory_format=fmt)
    distributed.broadcast_module(model)  # one start for every rank
    if getattr(cfg, "compile", False):
        compile_model(model)
    own_draws = None
    if distributed.is_distributed():  # each rank its own augmentation draws on its share
        own_draws = torch.Generator().manual_seed((cfg.seed * 1_000_003 + distributed.rank() + 1) % 2**63)
    state = RunState(config=cfg, scenario=scenario, model=model, device=device, hooks=pm.hook,
                     strategies=strategies, transform=scenario.transform, generator=generator,
                     memory_format=fmt, checkpointer=checkpointer, resume=resume, rank_generator=own_draws)
    with pm.composition(strategies):
        t0 = time.perf_counter()
        loop = kind.loop(state, progress=progress)
        try:
            loop.run()
        except CfsError as exc:
            raise RunFailed(str(exc), state) from exc
        seconds = time.perf_counter() - t0
    if resume is not None:
        seconds += sum(resume.get("timings", {}).get("train_seconds", [])) + sum(
            resume.get("timings", {}).get("eval_seconds", []))
    return RunResult(spec, state, loop.timings, seconds)


def plan_runs(pm: CfsPluginManager, cfg: RunConfig) -> list[tuple[str, list[Strategy]]]:
    """Check every name and option and build every run's strategies before any work starts:
    a typo, a bad option or a composition that cannot compose in the last ``--strategy`` is
    reported before the first run trains or writes anything."""
    factory = pm.scenarios.get(cfg.scenario)
    kind = getattr(factory, "kind", None)
    if not cfg.backbone.startswith("timm:"):
        pm.backbones.get(cfg.backbone)
    all_names: set[str] = set()
    plan = []
    for spec in cfg.strategies:
        classes = strategy_classes(pm, spec)
        if kind is not None:
            check_compatible(classes, kind, cfg.scenario)
        all_names |= {c.name for c in classes}
        plan.append((spec, make_strategies(classes, cfg)))
    for strat in cfg.options:
        if strat not in all_names:
            raise CfsError(f"options given for {strat!r}, which is not among the strategies of this run")
    check_scaling(pm, cfg, kind)
    return plan


def check_scaling(pm: CfsPluginManager, cfg: RunConfig, kind: str | None) -> None:
    """``--compile`` and a distributed run's shares, checked before any work: the continual
    loops split ``batch_size`` over the ranks, the episodic loop ``meta_batch``; the episodic
    loop's strategies differentiate through ``torch.func`` transforms, which are not compiled."""
    from cfs.engine.episodic import EpisodicLoop

    loop = getattr(pm.kinds.get(kind), "loop", None) if kind is not None else None
    episodic = isinstance(loop, type) and issubclass(loop, EpisodicLoop)
    if getattr(cfg, "compile", False):
        if episodic:
            raise CfsError(f"--compile applies to class-incremental and FSCIL runs, not to {kind} scenarios "
                           f"such as {cfg.scenario!r} (meta-learning differentiates through torch.func "
                           f"transforms); leave out --compile")
        check_compile(cfg.device)
    if episodic:
        distributed.check_divisible(cfg.meta_batch, "--meta-batch")
    else:
        distributed.check_divisible(cfg.batch_size, "--batch-size")


def validate_names(pm: CfsPluginManager, cfg: RunConfig) -> None:
    """:func:`plan_runs` without keeping its instances."""
    plan_runs(pm, cfg)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
