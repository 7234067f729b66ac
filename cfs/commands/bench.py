"""``cfs bench``: train and evaluate strategies on a scenario and write one results folder per run.

Every name (scenario, its kind, strategies, backbone, loggers, options) is checked before the
first run starts, so a typo never leaves half the runs done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cfs.commands.base import plugin_manager
from cfs.config import RunConfig, load_yaml, parse_option, resolve
from cfs.errors import CfsError
from cfs.kinds import ScenarioKind, kind_for
from cfs.plugins import CfsPluginManager
from cfs.registry import Registry
from cfs.scenarios.base import Scenario

NAME = "bench"

BENCH_KEYS = ("scenario", "strategies", "loggers", "epochs", "batch_size", "lr", "seed", "device", "backbone", "head",
              "optimizer", "schedule", "momentum", "weight_decay", "data_root", "split", "class_order_seed", "max_train_per_class",
              "weights", "memory_format", "download", "amp", "pretrained", "out", "meta_iterations", "meta_batch", "val_interval",
              "test_episodes", "n_way", "k_shot", "q_query", "train_n_way")


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    bench = subparsers.add_parser(NAME, parents=[parent], help="train and evaluate strategies on a scenario")
    bench.add_argument("--config", metavar="FILE.yaml", help="YAML config; flags override it")
    bench.add_argument("--scenario", help="scenario name (default split-digits; see `cfs list`)")
    bench.add_argument("--strategy", dest="strategies", action="append", metavar="NAME[+NAME]",
                       help="strategy to run; repeat to compare, a+b to compose (default: the baselines)")
    bench.add_argument("-o", "--option", dest="option_args", action="append", default=[], metavar="S.KEY=VALUE",
                       help="strategy option, e.g. -o lwf.lam=3")
    for flag, typ in (("epochs", int), ("batch-size", int), ("lr", float), ("seed", int), ("device", str),
                      ("backbone", str), ("head", str), ("optimizer", str), ("schedule", str), ("momentum", float),
                      ("weight-decay", float), ("data-root", str), ("split", str), ("class-order-seed", int), ("max-train-per-class", int), ("memory-format", str),
                      ("weights", str), ("meta-iterations", int), ("meta-batch", int), ("val-interval", int),
                      ("test-episodes", int), ("n-way", int), ("k-shot", int), ("q-query", int), ("train-n-way", int)):
        bench.add_argument(f"--{flag}", type=typ, default=None)
    bench.add_argument("--download", action="store_true", default=None, help="let torchvision download data")
    bench.add_argument("--amp", action="store_true", default=None, help="mixed precision")
    bench.add_argument("--pretrained", action="store_true", default=None, help="pretrained timm weights")
    bench.add_argument("--out", help="results folder (default runs/<time>-<scenario>-<strategy>)")
    bench.add_argument("--no-progress", action="store_true", help="hide progress bars")
    bench.add_argument("--logger", dest="loggers", action="append", metavar="NAME",
                       help="console (default), jsonl, tensorboard or a plugin's (see `cfs list`); repeat for several")


def bench_config(args: argparse.Namespace, pm: CfsPluginManager) -> RunConfig:
    """defaults < scenario defaults < --config file < flags."""
    file_values = load_yaml(args.config) if args.config else {}
    flags: dict[str, Any] = {k: getattr(args, k) for k in BENCH_KEYS}
    options: dict[str, dict[str, Any]] = {}
    for text in args.option_args:
        strat, key, value = parse_option(text)
        options.setdefault(strat, {})[key] = value
    flags["options"] = options or None
    scenario = flags["scenario"] or file_values.get("scenario") or "split-digits"
    scenario_defaults = getattr(pm.scenarios.get(str(scenario)), "defaults", {})
    cfg = resolve(scenario_defaults, file_values, flags)
    if not flags["strategies"] and "strategies" not in file_values:
        cfg.strategies = [e.name for e in pm.strategies.entries() if getattr(e.obj, "bench_default", False)]
        if not cfg.strategies:
            raise CfsError("no strategy given and no default strategies are registered; pass --strategy NAME")
    return cfg


def declared_kind(factory: Any, cfg: RunConfig, kinds: Registry) -> ScenarioKind | None:
    """The registered kind a scenario factory declares (``factory.kind``), checked before any
    work starts; ``None`` for a factory that declares none."""
    declared = getattr(factory, "kind", None)
    return kind_for(kinds, declared, f"scenario {cfg.scenario!r}") if declared is not None else None


def build_scenario(factory: Any, cfg: RunConfig, kinds: Registry,
                   kind: ScenarioKind | None = None) -> tuple[Scenario, ScenarioKind]:
    """Build the scenario (a protocol file by its kind) and return it with its registered kind."""
    from cfs.scenarios.builtin import ProtocolScenario

    if isinstance(factory, ProtocolScenario) and kind is not None:
        scenario = factory.build(cfg, kind)
    else:
        scenario = factory(cfg)
    if kind is None or scenario.kind != kind.name:
        kind = kind_for(kinds, scenario.kind, f"scenario {cfg.scenario!r}")
    return scenario, kind


def run(args: argparse.Namespace) -> int:
    from cfs.engine.runner import plan_runs, run_strategy
    from cfs.evaluation.loggers import select_loggers
    from cfs.evaluation.writer import default_run_dir, write_run

    pm = plugin_manager(args)
    cfg = bench_config(args, pm)
    loggers = select_loggers(pm.loggers, cfg.loggers)
    factory = pm.scenarios.get(cfg.scenario)
    kind = declared_kind(factory, cfg, pm.kinds)
    plan = plan_runs(pm, cfg)
    scenario, kind = build_scenario(factory, cfg, pm.kinds, kind)
    plugins = {name: info.distribution for name, info in pm.info.items()}
    rows = []
    for spec, strategies in plan:
        result = run_strategy(pm, cfg, spec, scenario, progress=not args.no_progress, strategies=strategies)
        if cfg.out:
            out = Path(cfg.out) / spec if len(cfg.strategies) > 1 else Path(cfg.out)
        else:
            out = default_run_dir(cfg.scenario, spec)
        data = write_run(result, out, plugins, kind=kind, loggers=loggers)
        rows.append(data)
        print(f"{spec}: results in {out}", file=sys.stderr)
    print(kind.header(scenario, cfg))
    for logger in loggers:
        logger.finish(rows, kind)
    return 0
