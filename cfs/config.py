"""Run configuration: defaults < scenario defaults < YAML file < command-line flags.

One dataclass, validated in one place; an unknown key names the closest valid ones, a bad
value names the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from cfs.errors import CfsError, did_you_mean


@dataclass
class RunConfig:
    """Everything a run depends on; written resolved beside its results."""

    scenario: str = "split-digits"
    strategies: list[str] = field(default_factory=lambda: ["finetune"])
    loggers: list[str] = field(default_factory=lambda: ["console"])  # names in pm.loggers, checked by cfs bench
    backbone: str = "mlp"
    head: str = "linear"
    epochs: int = 1
    batch_size: int = 32
    eval_batch_size: int = 1024
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "none"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "auto"  # --amp's type: bf16 on the CPU and on bf16-capable GPUs, else fp16
    compile: bool = False  # torch.compile the backbone (hooks and the growing head stay outside)
    memory_format: str = "auto"
    data_root: str | None = None
    download: bool = False
    split: str | None = None
    class_order_seed: int | None = None
    class_order: str = "seed"  # seed, curriculum or file:PATH (cfs.scenarios.curriculum)
    max_train_per_class: int | None = None
    image_size: int | None = None  # decode image-file data sets at N x N
    eval_seen_only: bool = False  # evaluate only the experiences trained so far (quick runs)
    pretrained: bool = False
    weights: str | None = None
    out: str | None = None
    # fault handling (cfs.engine.checkpoint, cfs.engine.step)
    checkpoint_epochs: int = 0  # also checkpoint every N epochs (0: only at experience boundaries and by time)
    checkpoint_minutes: float = 10.0  # also checkpoint when this many minutes passed (0: off)
    checkpoint_min_seconds: float = 5.0  # skip a boundary checkpoint younger than this (0: always)
    on_nan: str = "stop"  # a non-finite loss: stop the run, or skip-batch
    deterministic: bool = False  # torch.use_deterministic_algorithms(True) for the run
    # episodic (few-shot) runs; ``None`` takes the protocol's episode shape
    meta_iterations: int = 1000
    meta_batch: int = 1
    val_interval: int = 500
    val_episodes: int = 100
    test_episodes: int = 600
    select_best: bool = True
    n_way: int | None = None
    k_shot: int | None = None
    q_query: int | None = None
    train_n_way: int | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES = {
    "optimizer": ("sgd", "adam", "adamw"),
    "schedule": ("none", "cosine", "step"),
    "device": ("auto", "cpu", "cuda"),
    "memory_format": ("auto", "contiguous", "channels_last"),
    "head": ("linear", "cosine"),
    "on_nan": ("stop", "skip-batch"),
    "amp_dtype": ("auto", "bf16", "fp16"),
}
POSITIVE = ("epochs", "batch_size", "eval_batch_size", "meta_iterations", "meta_batch", "val_interval", "val_episodes",
            "test_episodes")
# ``None`` means "not set" (no limit, the protocol's episode shape); a set value is at least 1
AT_LEAST_ONE_OR_NONE = ("max_train_per_class", "image_size", "n_way", "k_shot", "q_query", "train_n_way")


FLOAT32_MAX = 3.4028234663852886e38
SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit: np.random.seed(2**32) is a ValueError mid-run


def _text(value: Any) -> str:
    """``value`` as it reads in a one-line message (repr, cut short)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(key: str, value: Any, hint: Any) -> Any:
    text = str(hint)
    expected = hint.__name__ if isinstance(hint, type) else text.replace("typing.", "").replace(" | None", "")
    if value is None:
        if "None" in text:
            return None
        raise CfsError(f"config key {key!r} must not be empty")
    try:
        if hint is bool or text == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, (bool, int)) or value not in (0, 1):
                raise ValueError(value)
            return bool(value)
        if isinstance(value, bool) and not text.startswith(("str", "list", "dict")):
            raise ValueError(value)  # ``epochs: true`` is a mistake, not 1
        if hint is int or text.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if isinstance(value, (list, dict, set, tuple)):
                raise TypeError(value)
            return int(value)
        if hint is float or text.startswith("float"):
            if isinstance(value, (list, dict, set, tuple)):
                raise TypeError(value)
            number = float(value)
            if not math.isfinite(number):
                raise CfsError(f"config key {key!r} must be a finite number, got {_text(value)}")
            return number
        if text.startswith("list"):
            items = value if isinstance(value, list) else [value]
            if "int" in text:
                return [_coerce(key, v, int) for v in items]
            return [_scalar_text(key, v) for v in items]
        if text.startswith("dict"):
            return _options(key, value)
        return _scalar_text(key, value)
    except (TypeError, ValueError, OverflowError):
        raise CfsError(f"config key {key!r}: {_text(value)} is not a valid {expected}") from None


def _scalar_text(key: str, value: Any) -> str:
    """A string setting: a scalar, without NUL characters (no path or name holds one)."""
    if isinstance(value, (list, dict, set, tuple)) or value is None:
        raise TypeError(value)
    text = str(value)
    if "\x00" in text:
        raise CfsError(f"config key {key!r}: {_text(value)} contains a NUL character")
    return text


def _options(key: str, value: Any) -> dict[str, dict[str, Any]]:
    """``options: {strategy: {key: value}}``: names are strings, each strategy's value a mapping."""
    if not isinstance(value, dict):
        raise CfsError(f"config key {key!r} must map strategy names to their options, "
                       f"e.g. options: {{lwf: {{lam: 3}}}}; got {_text(value)}")
    out: dict[str, dict[str, Any]] = {}
    for strat, opts in value.items():
        if not isinstance(strat, str) or not strat:
            raise CfsError(f"config key {key!r}: strategy name {_text(strat)} is not a name")
        if opts is None:
            opts = {}
        if not isinstance(opts, dict) or not all(isinstance(k, str) and k for k in opts):
            raise CfsError(f"config key {key!r}: the options of {strat!r} must be a mapping of "
                           f"option names to values, e.g. {{lam: 3}}; got {_text(opts)}")
        out[strat] = dict(opts)
    return out


def _one_line(exc: BaseException) -> str:
    """An exception as one short line; for a YAML error its problem and where it is."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return " ".join(f"{problem}{where}".split())
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file; a missing, unreadable or malformed file is a user error.

    The file must be UTF-8 text holding one mapping whose keys are strings (``-`` and ``_``
    are the same in a key); the values are checked by :func:`resolve`.
    """
    p = Path(path)
    if not p.is_file():
        raise CfsError(f"config file {str(p)!r} does not exist")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise CfsError(f"config file {str(p)!r} cannot be read: {exc.strerror or _one_line(exc)}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CfsError(f"config file {str(p)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CfsError(f"config file {str(p)!r} is not valid YAML: {_one_line(exc)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. a date 2020-13-45
        raise CfsError(f"config file {str(p)!r} is not valid YAML: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CfsError(f"config file {str(p)!r} must hold a mapping of keys to values "
                       f"(e.g. 'epochs: 3'), not a {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise CfsError(f"config file {str(p)!r}: key {_text(bad[0])} is not a name; keys are "
                       f"config names such as 'epochs' (see cfs bench --help)")
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve(*layers: dict[str, Any]) -> RunConfig:
    """Merge layers (later wins; ``None`` values are skipped) into a validated RunConfig."""
    hints = get_type_hints(RunConfig)
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in hints:
                raise CfsError(f"unknown config key {key!r}{did_you_mean(key, hints)}")
            if value is None:
                continue
            if key == "options":
                for strat, opts in _coerce(key, value, hints[key]).items():
                    merged.setdefault("options", {}).setdefault(strat, {}).update(opts)
                continue
            merged[key] = _coerce(key, value, hints[key])
    cfg = RunConfig(**merged)
    check(cfg)
    return cfg


def check(cfg: RunConfig) -> None:
    """Refuse values no run can use, with one line naming the key (before any work)."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise CfsError(f"config key {key!r}: {getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    for key in POSITIVE:
        if getattr(cfg, key) < 1:
            raise CfsError(f"config key {key!r} must be at least 1")
    for key in AT_LEAST_ONE_OR_NONE:
        value = getattr(cfg, key)
        if value is not None and value < 1:
            hint = " (leave it out for no limit)" if key == "max_train_per_class" else ""
            raise CfsError(f"config key {key!r} must be at least 1, got {value}{hint}")
    for key, value in dataclasses.asdict(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise CfsError(f"config key {key!r} must be a finite number, got {value}")
        if isinstance(value, float) and abs(value) > FLOAT32_MAX:  # torch keeps them as float32
            raise CfsError(f"config key {key!r} is out of range: {value:g} (at most {FLOAT32_MAX:.3g})")
    if cfg.momentum > 1:
        raise CfsError(f"config key 'momentum' must be between 0 and 1, got {cfg.momentum:g}")
    if cfg.lr <= 0:
        raise CfsError("config key 'lr' must be positive")
    for key in ("momentum", "weight_decay", "checkpoint_epochs", "checkpoint_minutes"):
        if getattr(cfg, key, 0) < 0:
            raise CfsError(f"config key {key!r} must be >= 0, got {getattr(cfg, key)}")
    if cfg.gamma <= 0:
        raise CfsError(f"config key 'gamma' must be positive, got {cfg.gamma}")
    if any(m < 1 for m in cfg.milestones):
        raise CfsError(f"config key 'milestones' must list epochs >= 1, got {cfg.milestones}")
    for key in ("seed", "class_order_seed"):
        value = getattr(cfg, key)
        if value is not None and not 0 <= value <= SEED_MAX:
            raise CfsError(f"config key {key!r} must be between 0 and 2**32-1, got {value}")
    if cfg.class_order != "seed":
        from cfs.scenarios.curriculum import parse_class_order

        parse_class_order(cfg.class_order)
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        raise CfsError(f"--weights {cfg.weights!r}: no such file")


def parse_option(text: str) -> tuple[str, str, Any]:
    """``-o lwf.lam=3`` -> ("lwf", "lam", 3); values are read as YAML scalars or flow
    collections (``[1, 2]``), and number words Python reads (``1e3``, ``nan``) as floats, so a
    non-finite value is refused by the option's type check instead of passing as a string."""
    key, eq, value = text.partition("=")
    strat, dot, name = key.partition(".")
    if not eq or not dot or not strat.strip() or not name.strip():
        raise CfsError(f"bad option {text!r}: use STRATEGY.KEY=VALUE, e.g. lwf.lam=3")
    try:
        parsed = yaml.safe_load(value)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise CfsError(f"bad option {text!r}: {_text(value)} is not a valid value ({_one_line(exc)}); "
                       f"quote strings and close brackets, e.g. {key}=[1, 2]") from None
    if isinstance(parsed, str):
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return strat, name, parsed
