"""The grid of a sweep: scenarios x strategies x option values x seeds, from flags or a YAML file.

A grid file (``cfs sweep --grid FILE.yaml``) holds any of::

    scenarios: [split-digits]            # or scenario: split-digits
    strategies: [finetune, replay, replay+lwf]
    seeds: [0, 1, 2]                     # or "0,1,2" or "0-4"
    options:                             # every value is one grid axis
      replay.mem_size: [200, 2000]       # or  replay: {mem_size: [200, 2000]}
    bench:                               # cfs bench flags for every run
      epochs: 1
      data-root: /data

Flags given on the command line replace the file's axis (``--strategy``, ``--seeds``,
``--scenario``), override its option axes key by key (``-o replay.mem_size=200,2000``) and its
``bench:`` flags. An option axis ``S.KEY`` multiplies only the strategies that include ``S``
(``replay`` and ``replay+lwf`` above), never ``finetune``: a run gets only its own options.
An option whose one value is a list is written ``[[1, 2]]`` in the file, ``S.KEY=[1, 2]`` as a flag.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from cfs.config import load_yaml
from cfs.errors import CfsError, did_you_mean

#: The keys of a grid file; ``scenario``/``strategy``/``seed`` are accepted as their singulars.
FILE_KEYS = ("scenarios", "strategies", "seeds", "options", "bench")
SINGULAR = {"scenario": "scenarios", "strategy": "strategies", "seed": "seeds"}


@dataclass(frozen=True)
class Point:
    """One run of the sweep: a ``cfs bench`` of one scenario, strategy, seed and option values
    (``(("replay.mem_size", "200"),)``: option keys and value texts, sorted by key)."""

    scenario: str
    strategy: str
    seed: int
    options: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        """The run folder's name: every coordinate, readable and safe as a file name."""
        parts = [self.scenario, self.strategy, *(f"{k}={v}" for k, v in self.options), f"seed{self.seed}"]
        return "_".join(re.sub(r"[^A-Za-z0-9._+=-]", "-", p) for p in parts)[:200]

    def bench_argv(self) -> list[str]:
        """The flags that place this point in the grid (the sweep's shared flags come first)."""
        argv = ["--scenario", self.scenario, "--strategy", self.strategy, "--seed", str(self.seed)]
        for key, value in self.options:
            argv += ["-o", f"{key}={value}"]
        return argv

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "strategy": self.strategy, "seed": self.seed,
                "options": dict(self.options)}


@dataclass
class Grid:
    """The axes of a sweep and the ``cfs bench`` flags shared by every run (``bench``: argv)."""

    scenarios: list[str]
    strategies: list[str]
    seeds: list[int]
    options: dict[str, list[str]] = field(default_factory=dict)
    bench: list[str] = field(default_factory=list)

    def points(self) -> list[Point]:
        """Every point, scenario-major and seed-minor (a seed group's runs are adjacent)."""
        points: list[Point] = []
        for scenario, strategy in itertools.product(self.scenarios, self.strategies):
            names = set(strategy.split("+"))
            keys = [k for k in self.options if k.split(".", 1)[0] in names]
            for values in itertools.product(*(self.options[k] for k in keys)):
                options = tuple(sorted(zip(keys, values)))
                points += [Point(scenario, strategy, seed, options) for seed in self.seeds]
        names_seen: dict[str, Point] = {}
        for p in points:
            if p.name in names_seen:
                raise CfsError(f"two grid points share the run folder name {p.name!r} ({names_seen[p.name]} and {p}); "
                               f"remove the duplicate value")
            names_seen[p.name] = p
        return points


def value_text(value: Any) -> str:
    """A YAML value as the text ``-o S.KEY=TEXT`` reads back (strings as they are)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def split_top_level(text: str) -> list[str]:
    """``"1,[2, 3],x"`` -> ``["1", "[2, 3]", "x"]``: commas inside brackets or braces stay."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_seeds(value: Any, where: str = "--seeds") -> list[int]:
    """``"0,1,2"``, ``"0-4"`` (inclusive), an int or a list of ints; no duplicates."""
    if isinstance(value, bool):
        raise CfsError(f"{where}: {value!r} is not a seed; give integers, e.g. 0,1,2")
    items = value if isinstance(value, list) else [value] if isinstance(value, int) else split_top_level(str(value))
    seeds: list[int] = []
    for item in items:
        text = str(item).strip()
        span = re.fullmatch(r"(\d+)-(\d+)", text)
        if span and int(span[1]) <= int(span[2]):
            seeds += range(int(span[1]), int(span[2]) + 1)
        elif re.fullmatch(r"\d+", text) and not isinstance(item, (bool, float)):
            seeds.append(int(text))
        else:
            raise CfsError(f"{where}: {text!r} is not a seed; give non-negative integers, e.g. 0,1,2 or 0-4")
    if not seeds:
        raise CfsError(f"{where}: no seed given; e.g. --seeds 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise CfsError(f"{where}: seed {next(s for s in seeds if seeds.count(s) > 1)} is given twice")
    return seeds


def _option_key(key: str, where: str) -> str:
    strat, dot, name = key.partition(".")
    if not dot or not strat.strip() or not name.strip():
        raise CfsError(f"{where}: bad option {key!r}: use STRATEGY.KEY=V1,V2, e.g. replay.mem_size=200,2000")
    return key.strip()


def parse_option_flag(text: str) -> tuple[str, list[str]]:
    """``-o replay.mem_size=200,2000`` -> ``("replay.mem_size", ["200", "2000"])``."""
    key, eq, values = text.partition("=")
    if not eq:
        raise CfsError(f"-o {text!r}: use STRATEGY.KEY=V1,V2, e.g. replay.mem_size=200,2000")
    parsed = split_top_level(values)
    if any(v == "" for v in parsed):
        raise CfsError(f"-o {text!r}: an empty value; separate values with single commas")
    return _option_key(key, "-o"), parsed


def _file_options(raw: Any, where: str) -> dict[str, list[str]]:
    """``options:`` of a grid file: ``S.KEY: values`` or ``S: {KEY: values}``."""
    if not isinstance(raw, dict):
        raise CfsError(f"{where}: 'options' must map STRATEGY.KEY to a list of values")
    out: dict[str, list[str]] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and "." not in str(key):
            for sub, sub_value in value.items():
                out.update(_file_options({f"{key}.{sub}": sub_value}, where))
            continue
        values = value if isinstance(value, list) else [value]
        if not values:
            raise CfsError(f"{where}: option {key!r} has no value")
        out[_option_key(str(key), where)] = [value_text(v) for v in values]
    return out


def _names(value: Any, key: str, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise CfsError(f"{where}: {key!r} must be a name or a list of names")
    return [v.strip() for v in items]


def bench_mapping_argv(raw: Any, where: str) -> list[str]:
    """``bench: {epochs: 1, amp: true, logger: [console, jsonl]}`` -> cfs bench flags."""
    if not isinstance(raw, dict):
        raise CfsError(f"{where}: 'bench' must map cfs bench flags to values, e.g. 'epochs: 1'")
    argv: list[str] = []
    for key, value in raw.items():
        flag = "--" + str(key).lstrip("-").replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is None or value is False:
            continue
        else:
            for v in value if isinstance(value, list) else [value]:
                argv += [flag, value_text(v)]
    return argv


def load_grid_file(path: str) -> dict[str, Any]:
    """A grid file's axes, every key and type checked (one-line errors)."""
    where = f"--grid {path}"
    try:
        data = load_yaml(path)
    except CfsError as exc:
        raise CfsError(f"--grid: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        canonical = SINGULAR.get(key, key)
        if canonical not in FILE_KEYS:
            raise CfsError(f"{where}: unknown key {key!r}{did_you_mean(key, FILE_KEYS)} "
                           f"(valid: {', '.join(FILE_KEYS)})")
        if canonical in out:
            raise CfsError(f"{where}: {canonical!r} is given twice")
        if canonical in ("scenarios", "strategies"):
            out[canonical] = _names(value, key, where)
        elif canonical == "seeds":
            out[canonical] = parse_seeds(value, where)
        elif canonical == "options":
            out[canonical] = _file_options(value, where)
        else:
            out[canonical] = bench_mapping_argv(value, where)
    return out


def build_grid(file_values: dict[str, Any], strategies: list[str] | None, seeds: str | None,
               scenarios: list[str] | None, option_flags: list[str]) -> Grid:
    """Flags over the file; a missing axis takes ``cfs bench``'s default (scenario
    split-digits, seed 0). At least one strategy must be named."""
    options = dict(file_values.get("options") or {})
    for text in option_flags:
        key, values = parse_option_flag(text)
        options[key] = values
    grid = Grid(scenarios=scenarios or file_values.get("scenarios") or ["split-digits"],
                strategies=strategies or file_values.get("strategies") or [],
                seeds=parse_seeds(seeds) if seeds is not None else file_values.get("seeds") or [0],
                options=options, bench=list(file_values.get("bench") or []))
    if not grid.strategies:
        raise CfsError("no strategy to sweep: give --strategy NAME (repeat for several) or 'strategies:' in --grid")
    for axis in (grid.scenarios, grid.strategies):
        dup = next((v for v in axis if axis.count(v) > 1), None)
        if dup is not None:
            raise CfsError(f"{dup!r} is given twice in the grid")
    used = {name for spec in grid.strategies for name in spec.split("+")}
    for key, values in options.items():
        if key.split(".", 1)[0] not in used:
            raise CfsError(f"option {key!r} is for {key.split('.', 1)[0]!r}, which no strategy of the sweep includes")
        dup = next((v for v in values if values.count(v) > 1), None)
        if dup is not None:
            raise CfsError(f"option {key!r}: value {dup!r} is given twice")
    return grid
