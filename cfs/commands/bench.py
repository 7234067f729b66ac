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
from cfs.errors import CfsError, shown
from cfs.kinds import ScenarioKind, kind_for
from cfs.plugins import CfsPluginManager
from cfs.registry import Registry
from cfs.scenarios.base import Scenario

NAME = "bench"

BENCH_KEYS = ("scenario", "strategies", "loggers", "epochs", "batch_size", "lr", "seed", "device", "backbone", "head",
              "optimizer", "schedule", "momentum", "weight_decay", "data_root", "split", "class_order_seed", "class_order", "max_train_per_class",
              "weights", "memory_format", "download", "amp", "pretrained", "out", "meta_iterations", "meta_batch", "val_interval",
              "val_episodes", "test_episodes", "n_way", "k_shot", "q_query", "train_n_way",
              "image_size", "eval_seen_only", "checkpoint_epochs", "checkpoint_minutes", "checkpoint_min_seconds", "on_nan",
              "deterministic", "compile", "amp_dtype")


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Every flag says what it does and its default: RunConfig's value, or the scenario's where
    protocol files set it (their ``defaults:``), so ``cfs bench --help`` is the reference."""
    from dataclasses import fields

    from cfs.config import CHOICES

    defaults = {f.name: f.default for f in fields(RunConfig)}
    by_scenario = {"backbone", "head", "epochs", "batch_size", "lr", "optimizer", "schedule", "momentum",
                   "weight_decay", "meta_iterations", "meta_batch", "val_interval", "val_episodes", "test_episodes"}

    def default(key: str) -> str:
        value = defaults[key]
        if key in by_scenario:
            return f"default: from the scenario, else {value}"
        return "default: from the scenario" if value is None else f"default: {value}"

    bench = subparsers.add_parser(
        NAME, parents=[parent], help="train and evaluate strategies on a scenario",
        description="Train and evaluate one or more strategies on a scenario and write one results folder per run "
                    "(config.yaml, run.json, metrics.json, CSV files, plots). Values come from RunConfig's defaults, "
                    "then the scenario's defaults, then --config FILE.yaml, then these flags. Every name and value "
                    "is checked before the first run starts.")
    bench.add_argument("--config", metavar="FILE.yaml", help="YAML config with any RunConfig key; flags override it "
                       "(default: none)")
    bench.add_argument("--scenario", help=f"scenario name or protocol, see `cfs list` ({default('scenario')})")
    bench.add_argument("--strategy", dest="strategies", action="append", metavar="NAME[+NAME]",
                       help="strategy to run; repeat to compare, a+b to compose (default: the baselines, "
                            "finetune and joint)")
    bench.add_argument("-o", "--option", dest="option_args", action="append", default=[], metavar="S.KEY=VALUE",
                       help="strategy option, e.g. -o lwf.lam=3; repeat for several (default: each strategy's own)")
    flags: tuple[tuple[str, type, str], ...] = (
        ("epochs", int, "training epochs per experience"),
        ("batch-size", int, "training batch size"),
        ("lr", float, "learning rate"),
        ("seed", int, "seed of the model, data order and every random draw of the run"),
        ("device", str, f"{'|'.join(CHOICES['device'])}; auto is cuda when available"),
        ("backbone", str, "registered backbone (`cfs list`) or timm:<model>"),
        ("head", str, f"classifier head that grows as classes arrive: {'|'.join(CHOICES['head'])}"),
        ("optimizer", str, "|".join(CHOICES["optimizer"])),
        ("schedule", str, f"learning-rate schedule: {'|'.join(CHOICES['schedule'])}"),
        ("momentum", float, "SGD momentum"),
        ("weight-decay", float, "weight decay"),
        ("data-root", str, "folder holding the data set (default: none; embedded data sets need none)"),
        ("split", str, "class split: a number of experiences or B<base>-Inc<k>, e.g. B50-Inc10"),
        ("class-order-seed", int, "seed of the class order (PyCIL's np.random.seed(1993) permutation)"),
        ("class-order", str, "class order: seed (by --class-order-seed), curriculum (the Curriculum Designer's "
                             "order from a first-pass extractor's class similarities) or file:PATH (class ids "
                             "in order) (default: seed)"),
        ("max-train-per-class", int, "keep at most N training images per class, for quick runs (default: all)"),
        ("image-size", int, "decode image-file data sets (image folders, Omniglot, mini-ImageNet) at N x N "
                            "(default: the data set's own size)"),
        ("memory-format", str, f"{'|'.join(CHOICES['memory_format'])}; auto is channels-last for conv nets on CPU"),
        ("weights", str, "local checkpoint to load into the backbone (default: none)"),
        ("meta-iterations", int, "few-shot: meta-training iterations"),
        ("meta-batch", int, "few-shot: tasks per meta-iteration"),
        ("val-interval", int, "few-shot: validate every N meta-iterations"),
        ("val-episodes", int, "few-shot: episodes per validation"),
        ("test-episodes", int, "few-shot: meta-test episodes"),
        ("n-way", int, "few-shot: classes per test episode"),
        ("k-shot", int, "few-shot: support images per class"),
        ("q-query", int, "few-shot: query images per class"),
        ("train-n-way", int, "few-shot: classes per meta-training episode "
                                    "(default: from the scenario, else --n-way)"),
    )
    for flag, typ, what in flags:
        key = flag.replace("-", "_")
        text = what if "default:" in what else f"{what} ({default(key)})"
        bench.add_argument(f"--{flag}", type=typ, default=None, help=text)
    bench.add_argument("--download", action="store_true", default=None,
                       help="let torchvision download the data set into --data-root (default: off)")
    bench.add_argument("--amp", action="store_true", default=None,
                       help="mixed precision: bf16 on CPU, fp16 on CUDA (default: off)")
    bench.add_argument("--amp-dtype", choices=("auto", "bf16", "fp16"), default=None,
                       help="type of --amp: auto is bf16 on the CPU and on GPUs that support it, fp16 "
                            "(with loss scaling) on older GPUs (default: auto)")
    bench.add_argument("--compile", action="store_true", default=None,
                       help="torch.compile the backbone; hooks and the growing head stay outside the "
                            "compiled region (class-incremental and FSCIL runs; default: off)")
    bench.add_argument("--pretrained", action="store_true", default=None,
                       help="pretrained backbone weights (timm's cache, or the backbone's own) (default: off)")
    bench.add_argument("--out", help="results folder; with several strategies one sub-folder each "
                                     "(default: runs/<time>-<scenario>-<strategy>)")
    bench.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown)")
    add_fault_flags(bench)
    bench.error = _usage_error  # a malformed flag is one line (exit 2) like every other user error
    bench.add_argument("--logger", dest="loggers", action="append", metavar="NAME",
                       help="console, jsonl, tensorboard or a plugin's (see `cfs list`); repeat for several "
                            "(default: console)")


def _usage_error(message: str) -> None:
    """argparse's error (usage text plus a message) as the one-line :class:`CfsError`."""
    raise CfsError(f"{' '.join(message.split())} (see cfs bench --help)")


def add_fault_flags(bench: argparse.ArgumentParser) -> None:
    """Flags of long runs: checkpoints, resuming, replacing a run folder, divergence."""
    bench.add_argument("--resume", metavar="RUN_DIR",
                       help="continue an interrupted `cfs bench` from its last checkpoint, with its recorded config "
                            "(finished strategies are skipped; only --epochs, to extend, and --logger may be given) "
                            "(default: start a new run)")
    bench.add_argument("--overwrite", action="store_true",
                       help="replace the cfs run in --out (only cfs's own files; default: refuse a non-empty --out)")
    bench.add_argument("--checkpoint-epochs", type=int, default=None,
                       help="also checkpoint every N epochs (default: 0, only at experience boundaries and by time)")
    bench.add_argument("--checkpoint-minutes", type=float, default=None,
                       help="also checkpoint when this many minutes have passed (default: 10; 0 turns it off)")
    bench.add_argument("--checkpoint-min-seconds", type=float, default=None,
                       help="skip an experience-boundary or validation checkpoint when the last one is younger "
                            "(default: 5; 0 checkpoints at every boundary)")
    bench.add_argument("--eval-seen-only", action="store_true", default=None,
                       help="evaluate only the experiences trained so far, for quick runs (unseen ones and forward "
                            "transfer read blank; default: every experience after every step)")
    bench.add_argument("--deterministic", action="store_true", default=None,
                       help="use torch's deterministic algorithms (slower on GPU; recorded in run.json; default: off)")
    bench.add_argument("--on-nan", choices=("stop", "skip-batch"), default=None,
                       help="a non-finite loss stops the run with one line, or skips that batch (default: stop)")


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


#: Flags a resumed run may change: they do not change its numbers (``--epochs`` may extend
#: it; the change is recorded in run.json's ``resumed``).
RESUME_FLAGS = {"epochs", "loggers"}


def resume_config(args: argparse.Namespace, pm: CfsPluginManager, folder: Path) -> tuple[RunConfig, dict[str, Any]]:
    """The recorded config of ``cfs bench --resume DIR``; a flag that would change the result
    is refused with one line. Returns the config and what the resumption changed."""
    recorded = folder / "config.yaml"
    if not recorded.is_file():
        raise CfsError(f"--resume {shown(folder)}: no config.yaml there; it is not a folder written by cfs bench")
    given = [k for k in BENCH_KEYS if getattr(args, k, None) is not None and k not in RESUME_FLAGS]
    if args.option_args or args.config:
        given.append("-o" if args.option_args else "--config")
    if given:
        flag = given[0] if given[0].startswith("-") else "--" + given[0].replace("_", "-")
        raise CfsError(f"--resume continues the recorded run; {flag} would change its result (remove it)")
    values = load_yaml(str(recorded))
    changed = {}
    if args.epochs is not None and args.epochs != values.get("epochs"):
        if args.epochs < int(values.get("epochs") or 0):
            raise CfsError(f"--resume: --epochs may only extend the run ({values.get('epochs')} recorded)")
        changed["epochs"] = [values.get("epochs"), args.epochs]
        values["epochs"] = args.epochs
    if args.loggers:
        values["loggers"] = args.loggers
    return resolve(values), changed


def headline(data: dict[str, Any]) -> str:
    """The number a finished run is known by, printed as soon as it finishes."""
    summary = data.get("summary") or {}
    for key, label in (("last_accuracy", "final accuracy"), ("accuracy", "accuracy")):
        if isinstance(summary.get(key), (int, float)):
            return f"{label} {100 * summary[key]:.1f}%, "
    return ""


def recorded_plugin_args(folder: Path) -> list[str]:
    """The ``-p`` values a run folder (or a folder of runs) was started with (run.json)."""
    import json

    for info_file in [folder / "run.json", *sorted(folder.glob("*/run.json"))]:
        try:
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and isinstance(info.get("plugin_args"), list):
            return [str(a) for a in info["plugin_args"]]
    return []


def follow_main_rank(pm: CfsPluginManager, cfg: RunConfig, plan: list[tuple[str, Any]], factory: Any,
                     kind: ScenarioKind | None, resume: Path | None) -> int:
    """A rank other than 0 of ``torchrun ... -m cfs bench``: trains the same runs in step with
    rank 0 (cfs.engine.distributed) and writes nothing; it only reads a resumed run's status
    and checkpoints, as rank 0 does, to skip and continue the same runs."""
    from cfs.engine.checkpoint import CheckpointPolicy
    from cfs.engine.runner import run_strategy
    from cfs.rundir import plan_folders

    scenario, kind = build_scenario(factory, cfg, pm.kinds, kind)
    folders = plan_folders([spec for spec, _ in plan], cfg.out, cfg.scenario, resume=resume) if resume else {}
    todo = []
    for spec, strategies in plan:  # statuses read before rank 0 starts writing any of them
        folder = folders.get(spec)
        if folder is not None and folder.status == "finished":
            continue
        checkpoint = folder.checkpointer(CheckpointPolicy()).latest() if folder is not None else None
        todo.append((spec, strategies, checkpoint))
    for spec, strategies, checkpoint in todo:
        run_strategy(pm, cfg, spec, scenario, progress=False, strategies=strategies, resume=checkpoint)
    return 0


def check_backbone(pm: CfsPluginManager, cfg: RunConfig, scenario: Any, plan: list | None = None) -> None:
    """Build the run's model once before any folder is written, so a backbone that cannot take
    the data (a Conv-4 on 8x8 images, RGB weights on grey images, a missing weights file), a
    ``--pretrained`` it would silently ignore, or a strategy of ``plan`` that declares another
    ``backbone_family`` (prompt methods and ConTraCon need a ViT) is a one-line error, not a
    crash mid-run."""
    import inspect

    from cfs.engine.runner import build_model

    if cfg.pretrained and not cfg.backbone.startswith("timm:"):
        factory = pm.backbones.get(cfg.backbone)
        if "pretrained" not in inspect.signature(factory).parameters:
            raise CfsError(f"--pretrained: backbone {cfg.backbone!r} has no pretrained weights "
                           f"(timm:<model> and efficientnet-lite0/1/2 have; --weights PATH loads a local file)")
    model = build_model(pm, cfg, scenario)
    from cfs.models.peft import backbone_family

    for spec, strategies in plan or []:
        for strategy in strategies:
            needed = getattr(strategy, "backbone_family", None)
            if needed is not None and backbone_family(model.backbone) != needed:
                raise CfsError(f"strategy {strategy.name!r} needs a {needed} backbone (for example --backbone "
                               f"vit-tiny or timm:vit_base_patch16_224), not {cfg.backbone!r}")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from cfs.engine import distributed
    from cfs.engine.checkpoint import CheckpointPolicy
    from cfs.engine.runner import RunFailed, plan_runs, run_strategy
    from cfs.evaluation.loggers import select_loggers
    from cfs.evaluation.writer import versions, write_run
    from cfs.rundir import describe_environment, lock_folders, plan_folders

    pm = plugin_manager(args)
    resume = Path(args.resume) if getattr(args, "resume", None) else None
    if resume is not None:
        if not resume.is_dir():
            raise CfsError(f"--resume {shown(resume)}: no such folder")
        recorded = recorded_plugin_args(resume)
        if recorded and not getattr(args, "plugins", None):  # the run's -p modules, as it was started
            from cfs.plugins import get_plugin_manager

            args.plugins, pm = recorded, get_plugin_manager(recorded)
        cfg, changed = resume_config(args, pm, resume)
    else:
        cfg, changed = bench_config(args, pm), {}
    loggers = select_loggers(pm.loggers, cfg.loggers)
    factory = pm.scenarios.get(cfg.scenario)
    kind = declared_kind(factory, cfg, pm.kinds)
    plan = plan_runs(pm, cfg)
    if not distributed.is_main():  # another rank of a torchrun run: the same runs, nothing written
        return follow_main_rank(pm, cfg, plan, factory, kind, resume)
    folders = plan_folders([spec for spec, _ in plan], cfg.out, cfg.scenario,
                           overwrite=bool(getattr(args, "overwrite", False)), resume=resume)
    scenario, kind = build_scenario(factory, cfg, pm.kinds, kind)  # data errors: still nothing written
    policy = CheckpointPolicy(epochs=cfg.checkpoint_epochs, minutes=cfg.checkpoint_minutes,
                              min_seconds=cfg.checkpoint_min_seconds)
    check_backbone(pm, cfg, scenario, plan)  # backbone errors (sizes, weights, family): still nothing written
    lock_folders(folders, resume=resume is not None)
    try:
        if len(plan) > 1 and resume is None and cfg.out:
            import yaml

            (Path(cfg.out) / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        plugins = {name: info.distribution for name, info in pm.info.items()}
        rows = []
        for spec, strategies in plan:
            folder = folders[spec]
            if resume is not None and folder.status == "finished":
                rows.append(json.loads((folder.path / "metrics.json").read_text()))
                print(f"{spec}: finished before, results in {folder.path}", file=sys.stderr)
                continue
            checkpointer = folder.checkpointer(policy)
            checkpoint = checkpointer.latest() if resume is not None else None
            if resume is not None and checkpoint is None:
                folder.clear_own()  # killed before its first checkpoint: start it again
            info = {"versions": versions(), "seed": cfg.seed, "strategy": spec, "scenario": cfg.scenario,
                    "plugin_args": list(getattr(args, "plugins", None) or []),
                    "plugins": plugins, **describe_environment(cfg)}
            folder.start(info, cfg.to_dict(), resumed={"at": time.time(), **changed} if resume is not None else None)
            try:
                result = run_strategy(pm, cfg, spec, scenario, progress=not args.no_progress, strategies=strategies,
                                      checkpointer=checkpointer, resume=checkpoint)
            except RunFailed as exc:
                res = exc.state.results
                folder.fail(str(exc), {"accuracy_matrix": res.rows, "initial_accuracy": res.initial})
                raise
            except KeyboardInterrupt:
                root = folder.path.parent if len(plan) > 1 else folder.path
                folder.fail(f"interrupted; continue with: cfs bench --resume {root}")
                raise
            data = write_run(result, folder.path, plugins, kind=kind, loggers=loggers)
            checkpointer.clear()
            rows.append(data)
            print(f"{spec}: {headline(data)}results in {folder.path}", file=sys.stderr)
    finally:
        for folder in folders.values():
            folder.release()
    print(kind.header(scenario, cfg))
    for logger in loggers:
        logger.finish(rows, kind)
    return 0
