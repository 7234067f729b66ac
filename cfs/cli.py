"""The ``cfs`` command: ``bench``, ``list``, ``plugins``.

Every user error is a :class:`cfs.errors.CfsError`, printed as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from cfs.config import load_yaml, parse_option, resolve
from cfs.errors import CfsError
from cfs.plugins import CfsPluginManager, get_plugin_manager


def _plugin_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME",
                   help="load plugin module NAME, or block a plugin with no:NAME")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfs", description="continual and few-shot learning benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    parent = _plugin_parent()

    bench = sub.add_parser("bench", parents=[parent], help="train and evaluate strategies on a scenario")
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
                       help="console (default), jsonl, tensorboard; repeat for several")

    sub.add_parser("list", parents=[parent], help="list scenarios, strategies and backbones")
    sub.add_parser("plugins", parents=[parent], help="list loaded plugins and what they register")
    for module in _subcommand_modules():
        COMMANDS[module.NAME] = module.run
        module.add_parser(sub, parent)
    return parser


#: Modules that each add one subcommand: ``NAME``, ``add_parser(subparsers, parent)``,
#: ``run(args) -> int``.
SUBCOMMAND_MODULES: tuple[str, ...] = ("cfs.commands.report", "cfs.commands.distill")


def _subcommand_modules():
    import importlib

    return [importlib.import_module(m) for m in SUBCOMMAND_MODULES]


BENCH_KEYS = ("scenario", "strategies", "loggers", "epochs", "batch_size", "lr", "seed", "device", "backbone", "head",
              "optimizer", "schedule", "momentum", "weight_decay", "data_root", "split", "class_order_seed", "max_train_per_class",
              "weights", "memory_format", "download", "amp", "pretrained", "out", "meta_iterations", "meta_batch", "val_interval",
              "test_episodes", "n_way", "k_shot", "q_query", "train_n_way")


def bench_config(args: argparse.Namespace, pm: CfsPluginManager):
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


# The console table lives with the other result formats (cfs.evaluation.table).
from cfs.evaluation.table import format_table  # noqa: E402


def cmd_bench(args: argparse.Namespace) -> int:
    from cfs.engine.runner import run_strategy, validate_names
    from cfs.evaluation.writer import default_run_dir, write_run

    pm = get_plugin_manager(args.plugins)
    cfg = bench_config(args, pm)
    validate_names(pm, cfg)
    scenario = pm.scenarios.get(cfg.scenario)(cfg)
    plugins = {name: info.distribution for name, info in pm.info.items()}
    rows = []
    for spec in cfg.strategies:
        result = run_strategy(pm, cfg, spec, scenario, progress=not args.no_progress)
        if cfg.out:
            out = Path(cfg.out) / spec if len(cfg.strategies) > 1 else Path(cfg.out)
        else:
            out = default_run_dir(cfg.scenario, spec)
        data = write_run(result, out, plugins)
        rows.append(data)
        print(f"{spec}: results in {out}", file=sys.stderr)
    if scenario.kind == "episodic":
        shape, n = scenario.episodic.eval_shape, {k: len(v) for k, v in scenario.episodic.classes.items()}
        print(f"scenario {scenario.name}: {shape.n_way}-way {shape.k_shot}-shot {shape.q_query}-query, classes "
              f"{n['train']}/{n['val']}/{n['test']} (train/val/test), backbone {cfg.backbone}, "
              f"{cfg.meta_iterations} meta-iterations x {cfg.meta_batch} tasks, seed {cfg.seed}")
    else:
        print(f"scenario {scenario.name}: {len(scenario.experiences)} experiences, {scenario.num_classes} classes, "
              f"backbone {cfg.backbone}, {cfg.epochs} epochs, seed {cfg.seed}")
    if "console" in cfg.loggers:
        print(format_table(rows))
    if scenario.kind == "fscil":  # per-session accuracy, base/novel (cfs.evaluation.fscil)
        from cfs.evaluation.fscil import session_table
        print("\n".join(session_table(r["fscil"], r["strategy"]) for r in rows))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    pm = get_plugin_manager(args.plugins)
    for title, registry in (("scenarios", pm.scenarios), ("strategies", pm.strategies), ("backbones", pm.backbones)):
        print(f"{title}:")
        entries = registry.entries()
        width = max((len(e.name) for e in entries), default=0)
        for e in entries:
            print(f"  {e.name.ljust(width)}  {e.summary}")
        if title == "backbones":
            print(f"  {'timm:<model>'.ljust(width)}  any timm model by name (e.g. timm:resnet18)")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    pm = get_plugin_manager(args.plugins)
    for info in pm.info.values():
        what = ", ".join(info.registers) or "hooks only"
        print(f"{info.name} ({info.distribution}; {info.module}): {what}")
    return 0


COMMANDS: dict[str, Any] = {"bench": cmd_bench, "list": cmd_list, "plugins": cmd_plugins}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CfsError as exc:
        print(f"cfs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cfs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
