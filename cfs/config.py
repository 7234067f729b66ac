"""Run configuration: defaults < scenario defaults < YAML file < command-line flags.

One dataclass, validated in one place; an unknown key names the closest valid ones, a bad
value names the key and the expected type.
"""

from __future__ import annotations

import dataclasses
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
    memory_format: str = "auto"
    data_root: str | None = None
    download: bool = False
    split: str | None = None
    class_order_seed: int | None = None
    max_train_per_class: int | None = None
    pretrained: bool = False
    weights: str | None = None
    out: str | None = None
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
}
POSITIVE = ("epochs", "batch_size", "eval_batch_size", "meta_iterations", "meta_batch", "val_interval", "val_episodes",
            "test_episodes")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    text = str(hint)
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
            return bool(value)
        if hint is int or text.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float or text.startswith("float"):
            return float(value)
        if text.startswith("list"):
            items = value if isinstance(value, list) else [value]
            return [int(v) for v in items] if "int" in text else [str(v) for v in items]
        if text.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError(value)
            return {str(k): dict(v or {}) for k, v in value.items()}
        return str(value)
    except (TypeError, ValueError):
        raise CfsError(f"config key {key!r}: {value!r} is not a valid {text.replace('typing.', '')}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file; a missing or malformed file is a user error."""
    p = Path(path)
    if not p.is_file():
        raise CfsError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CfsError(f"config file {str(p)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise CfsError(f"config file {str(p)!r} must hold a mapping of keys to values")
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
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise CfsError(f"config key {key!r}: {getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    for key in POSITIVE:
        if getattr(cfg, key) < 1:
            raise CfsError(f"config key {key!r} must be at least 1")
    if cfg.lr <= 0:
        raise CfsError("config key 'lr' must be positive")
    return cfg


def parse_option(text: str) -> tuple[str, str, Any]:
    """``-o lwf.lam=3`` -> ("lwf", "lam", 3); values are read as YAML scalars."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise CfsError(f"bad option {text!r}: use STRATEGY.KEY=VALUE, e.g. lwf.lam=3")
    key, value = text.split("=", 1)
    strat, name = key.split(".", 1)
    return strat, name, yaml.safe_load(value)
