"""Compare finished runs: a Markdown table, a self-contained HTML page and PNG plots.

A run folder is what ``cfs bench`` writes (``metrics.json`` and ``run.json``). Runs are
grouped by their scenario kind and each registered kind writes its own section
(:meth:`cfs.kinds.ScenarioKind.report`) with the tables and pictures its literature uses:
class-incremental runs the accuracy on all seen classes after each experience, the
accuracy-matrix heatmaps and the forgetting of each experience; FSCIL runs the per-session
accuracy; few-shot runs the mean accuracy with its 95 % interval. The HTML page inlines every
plot as a base64 PNG so it can be mailed or archived alone.

Runs are told apart by what differs between them (:func:`label_runs`): the label is the
strategy and every other differing setting, and the tables show those settings as columns.
Runs that differ only in their seed are one row, mean ± standard deviation over the seeds,
before the per-seed rows. A value that was not measured is a blank cell, not a zero. Only
finished runs are read: a folder whose ``run.json`` says another status is skipped with a line
on stderr.

A ``cfs sweep`` folder is a folder of runs like any other; its ``sweep.json`` adds a line
saying how many of its points finished and naming the others, and ``seeds.csv`` holds every
seed group's mean and sample standard deviation of each summary number, unrounded.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from cfs.errors import CfsError
from cfs.kinds import ReportSection, default_manager, kind_for
from cfs.registry import Registry

#: Config keys that say how a command was run, not what a run computed: they never label runs.
COMMAND_KEYS = frozenset({"strategies", "loggers", "out", "download", "checkpoint_epochs", "checkpoint_minutes"})
#: Differing keys shown first, in this order; the others follow in config order, ``seed`` last.
LEADING_KEYS = ("strategy", "scenario", "backbone", "epochs")


@dataclass
class Run:
    """One run folder as the report sees it: its numbers, ``run.json`` and ``config.yaml``.

    ``label`` names the run by the settings that differ between it and the other runs of its
    kind (``replay, seed=1``); ``group`` is the label without the seed, shared by runs that
    differ only in their seed."""

    path: Path
    label: str
    metrics: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    group: str = ""

    @property
    def kind(self) -> str | None:
        """The scenario kind the run was written by (``metrics.json``, else ``run.json``)."""
        return self.metrics.get("kind") or self._scenario_info.get("kind")

    @property
    def _scenario_info(self) -> dict[str, Any]:
        """run.json's scenario description (a bare name while a run is still running)."""
        scenario = self.info.get("scenario")
        return scenario if isinstance(scenario, dict) else {"name": scenario} if scenario else {}

    @property
    def strategy(self) -> str:
        """The run's strategy spec (``replay+lwf``); the folder name for a run that records none."""
        return str(self.metrics.get("strategy") or self.info.get("strategy") or self.path.name)

    @property
    def settings(self) -> dict[str, str]:
        """What the run was run with, as ``key -> text``: strategy, scenario, every config key
        (options flattened to ``name.key`` for the run's own strategies, the resolved device
        of run.json) and the seed. Labels and seed groups compare these texts."""
        out = {"strategy": self.strategy,
               "scenario": _text(self.metrics.get("scenario") or self._scenario_info.get("name")
                                 or self.config.get("scenario"))}
        for key, value in self.config.items():
            if key not in COMMAND_KEYS and key not in out and key != "options":
                out[key] = _text(value)
        options = self.config.get("options") or {}
        for name in self.strategy.split("+"):
            for key, value in sorted((options.get(name) or {}).items()):
                out[f"{name}.{key}"] = _text(value)
        if self.info.get("device"):
            out["device"] = _text(self.info["device"])
        seed = self.info.get("seed", self.config.get("seed"))
        if seed is not None:
            out["seed"] = _text(seed)
        return out

    def setting(self, key: str) -> str:
        """One setting's text; an option the run's strategy left unset reads ``default``, a key
        the run does not record reads blank."""
        if key in self.settings:
            return self.settings[key]
        return "default" if "." in key and key.split(".")[0] in self.strategy.split("+") else ""


def _text(value: Any) -> str:
    """A setting as one line of text (lists and mappings as compact JSON)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return " ".join(str(value).split())


def differing_keys(runs: list[Run]) -> list[str]:
    """The settings whose text is not the same in every run, in reading order: strategy,
    scenario, backbone, epochs, the other config keys, options, seed. A strategy's option is
    compared among the runs of that strategy only: it tells those apart, not the others."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.settings if k not in keys]

    def users(key: str) -> list[Run]:
        return [r for r in runs if "." not in key or key.split(".")[0] in r.strategy.split("+")]

    differ = [k for k in keys if len({r.setting(k) for r in users(k)}) > 1]
    lead = [k for k in LEADING_KEYS if k in differ]
    rest = [k for k in differ if k not in lead and k != "seed" and "." not in k]
    options = [k for k in differ if "." in k and k not in lead]
    return lead + rest + options + (["seed"] if "seed" in differ else [])


def _label(run: Run, keys: list[str]) -> str:
    """The strategy, then ``key=value`` for each differing key the run has (another
    strategy's option is no part of its name)."""
    return ", ".join([run.strategy] + [f"{k}={run.setting(k)}" for k in keys if k != "strategy" and run.setting(k)])


def label_runs(runs: list[Run]) -> None:
    """Name every run (and its seed group) by what differs between it and the other runs of
    its kind; runs that differ in nothing get their folder name too."""
    for kind in dict.fromkeys(r.kind for r in runs):
        same = [r for r in runs if r.kind == kind]
        keys = differing_keys(same)
        for r in same:
            r.label, r.group = _label(r, keys), _label(r, [k for k in keys if k != "seed"])
        labels = [r.label for r in same]
        for r in same:
            if labels.count(r.label) > 1:
                r.label = f"{r.label} ({r.path.name})"


def _is_run_folder(p: Path) -> bool:
    """A folder cfs wrote a run into, finished (metrics.json) or not (run.json only)."""
    return (p / "metrics.json").is_file() or (p / "run.json").is_file()


def _run_folders(paths: Iterable[str | Path]) -> list[Path]:
    """Each argument is a run folder, or a folder whose sub-folders are runs (``--out`` of a
    multi-strategy bench). Hidden sub-folders are cfs's temporary folders, never runs."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise CfsError(f"run folder {str(p)!r} does not exist; pass folders written by `cfs bench`")
        if p.is_dir() and _is_run_folder(p):
            found.append(p)
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")
                      and _is_run_folder(d)) if p.is_dir() else []
        if not subs:
            raise CfsError(f"{str(p)!r} holds no metrics.json; pass folders written by `cfs bench`")
        found += subs
    return found


def _read_json(path: Path, folder: Path) -> dict[str, Any]:
    """A JSON object, or a one-line error naming the run folder."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CfsError(f"{str(folder)!r}: {path.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CfsError(f"{str(folder)!r}: {path.name} is not a JSON object")
    return data


def _read_config(folder: Path) -> dict[str, Any]:
    """``config.yaml`` (the resolved run config), empty when an older run has none."""
    path = folder / "config.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise CfsError(f"{str(folder)!r}: config.yaml is not valid YAML") from None
    return data if isinstance(data, dict) else {}


def _skip_reason(folder: Path, info: dict[str, Any]) -> str | None:
    """Why a run folder is not a result: ``run.json`` says it is not finished (no status:
    an older, finished run), or it has no metrics.json."""
    status = info.get("status", "finished")
    if status != "finished":
        return f"status {status!r}"
    if not (folder / "metrics.json").is_file():
        return "no metrics.json"
    return None


def _warn(line: str) -> None:
    """A skipped run folder is worth a line on stderr, not an error: the others still report."""
    print(line, file=sys.stderr)


def load_runs(paths: Iterable[str | Path], warn: Callable[[str], None] = _warn) -> list[Run]:
    """Read every finished run and label it (:func:`label_runs`). An unfinished run folder is
    skipped with one line through ``warn`` (stderr); none finished is a one-line error."""
    runs, skipped = [], []
    for p in _run_folders(paths):
        info = _read_json(p / "run.json", p) if (p / "run.json").is_file() else {}
        reason = _skip_reason(p, info)
        if reason:
            warn(f"cfs report: skipping {p} ({reason}: not a finished run)")
            skipped.append(p)
            continue
        runs.append(Run(p, "", _read_json(p / "metrics.json", p), info, _read_config(p)))
    if not runs:
        raise CfsError(f"no finished run to report: {len(skipped)} run folder(s) skipped as unfinished")
    label_runs(runs)
    return runs


# ------------------------------------------------------------------------------ tables
def md_escape(text: Any) -> str:
    """Text for a Markdown table cell or line: ``|`` (which would start a new column), the
    backslash and inline-markup characters escaped, line breaks as spaces."""
    return re.sub(r"([\\|`*\[\]<>])", r"\\\1", " ".join(str(text).split()))


def _md_unescape(text: str) -> str:
    """The inverse of :func:`md_escape`, for the HTML page built from the Markdown."""
    return re.sub(r"\\(.)", r"\1", text)


def _md_cells(line: str) -> list[str]:
    """The cells of a pipe-table row; an escaped ``\\|`` stays inside its cell."""
    cells = re.findall(r"((?:\\.|[^|\\])*)\|", line.strip()[1:])
    return [_md_unescape(c.strip()) for c in cells]


def _row(cells: list[str]) -> str:
    """One pipe-table row of already escaped cells."""
    return "| " + " | ".join(cells) + " |"


@dataclass(frozen=True)
class Column:
    """A number column of a report table. ``value(run)`` is a fraction or a count (``None`` or
    NaN: not measured, shown blank), shown times ``scale`` with ``digits`` decimals after
    ``prefix``. For a group of seeds the cell is mean ± sample standard deviation when
    ``spread``, else the seeds' common value (blank when they disagree)."""

    header: str
    value: Callable[[Run], Any]
    scale: float = 100.0
    digits: int = 1
    prefix: str = ""
    spread: bool = True

    def number(self, run: Run) -> float | None:
        """The run's value times ``scale``; ``None`` when not measured."""
        try:
            v = self.value(run)
        except (KeyError, IndexError, TypeError):
            return None
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v) * self.scale

    def cell(self, runs: list[Run]) -> str:
        """One run's value, or a seed group's mean ± std; blank where nothing was measured."""
        values = [v for v in (self.number(r) for r in runs) if v is not None]
        if not values:
            return ""
        if len(values) == 1 or not self.spread:
            return f"{self.prefix}{values[0]:.{self.digits}f}" if len(set(values)) == 1 else ""
        mean, std = statistics.fmean(values), statistics.stdev(values)
        return f"{self.prefix}{mean:.{self.digits}f} ± {std:.{self.digits}f}"


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """Runs that differ only in their seed, in order of first appearance."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.group or r.label, []).append(r)
    return list(groups.values())


def metric_tables(runs: list[Run], columns: list[Column], scenario: bool = True) -> list[str]:
    """Markdown lines: one row per run, with a column per setting that differs between the
    runs (the strategy is the label's start) and, when ``scenario``, the scenario. When some
    runs differ only in their seed, first one row per seed group (mean ± sample standard
    deviation over its seeds, and their number), then the per-seed rows."""
    keys = [k for k in differing_keys(runs) if k not in ("strategy", "scenario")]
    lead = ["run"] + (["scenario"] if scenario else [])
    align = ["---"] * len(lead)

    def table(rows: list[list[Run]], keys: list[str], extra: list[str], name: Callable[[list[Run]], str]) -> list[str]:
        lines = [_row(lead + [md_escape(k) for k in keys] + extra + [md_escape(c.header) for c in columns]),
                 "|" + "|".join(align + ["---"] * len(keys) + ["---:"] * (len(extra) + len(columns))) + "|"]
        for group in rows:
            first = group[0]
            cells = [md_escape(name(group))] + ([md_escape(first.metrics.get("scenario", ""))] if scenario else [])
            cells += [md_escape(first.setting(k)) for k in keys]
            cells += [str(len(group))] if extra else []
            lines.append(_row(cells + [c.cell(group) for c in columns]))
        return lines

    groups = seed_groups(runs)
    per_run = table([[r] for g in groups for r in g], keys, [], lambda g: g[0].label)
    if all(len(g) == 1 for g in groups):
        return per_run
    grouped = table(groups, [k for k in keys if k != "seed"], ["seeds"], lambda g: g[0].group or g[0].label)
    return (["Mean ± sample standard deviation over the seeds of runs that differ only in their seed:", ""]
            + grouped + ["", "Per seed:", ""] + per_run)


def report_sections(runs: list[Run], kinds: Registry, out: Path) -> list[ReportSection]:
    """Each kind's section for its runs, in the registry's (alphabetical) order of kinds."""
    return [kinds.get(name).report([r for r in runs if r.kind == name], out)
            for name in kinds if any(r.kind == name for r in runs)]


def _markdown_to_html(md: str) -> str:
    """The report's own pipe tables and plain lines as HTML (no Markdown library needed);
    table cells are unescaped (:func:`md_escape`) and escaped again for HTML."""
    parts, rows = [], []

    def flush() -> None:
        if rows:
            head, body = rows[0], rows[2:]
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                         + "</tr></thead><tbody>" + "".join(
                             "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
                         + "</tbody></table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            rows.append(_md_cells(line))
        else:
            flush()
            if line.strip():
                parts.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(parts)


def html_page(runs: list[Run], md: str, figures: list[tuple[str, Path]]) -> str:
    imgs = []
    for caption, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        imgs.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    sources = "".join(f"<li>{html.escape(r.label)}: <code>{html.escape(str(r.path))}</code></li>" for r in runs)
    style = ("body{font-family:sans-serif;margin:2em;background:#fff;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}"
             "figure{display:inline-block;margin:1em}img{max-width:640px;border:1px solid #ddd}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>cfs report</title>"
            f"<style>{style}</style></head><body><h1>cfs report</h1>\n{_markdown_to_html(md)}\n"
            f"<h2>Plots</h2>\n{''.join(imgs)}\n<h2>Runs</h2><ul>{sources}</ul></body></html>\n")


# ------------------------------------------------------------------------------ sweeps and seed groups
def sweep_lines(paths: Iterable[str | Path]) -> list[str]:
    """For each argument that is a ``cfs sweep`` folder (it holds ``sweep.json``): how many of
    its points finished, and which did not (a point that never started has no run folder, so
    only the sweep's record can tell that it is missing from the tables)."""
    lines = []
    for p in map(Path, paths):
        path = p / "sweep.json"
        try:
            sweep = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError, UnicodeDecodeError):
            raise CfsError(f"{str(p)!r}: sweep.json is not valid JSON") from None
        if not isinstance(sweep, dict) or not isinstance(sweep.get("points"), list):
            continue
        points = [q for q in sweep["points"] if isinstance(q, dict)]
        done = sum(q.get("status") == "finished" for q in points)
        lines.append(md_escape(f"Sweep {p}: {done} of {len(points)} runs finished "
                               f"({sweep.get('backend', '?')} backend)."))
        for q in points:
            if q.get("status") != "finished":
                why = f": {q['error']}" if q.get("error") else ""
                lines.append(md_escape(f"Not in the tables: {q.get('name')} ({q.get('status')}{why})."))
    return lines


def _numbers(mapping: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) mapping, keys joined with ``.``."""
    out: dict[str, float] = {}
    for key, value in (mapping or {}).items() if isinstance(mapping, dict) else ():
        if isinstance(value, dict):
            out.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def write_seed_csv(runs: list[Run], path: Path) -> Path:
    """``seeds.csv``: one row per seed group (runs that differ only in their seed), with the
    number of seeds and, for every summary number and the run time, the mean and the sample
    standard deviation over the seeds (blank with one seed): the tables' numbers, unrounded."""
    import csv

    groups = [(kind, g) for kind in dict.fromkeys(r.kind for r in runs)
              for g in seed_groups([r for r in runs if r.kind == kind])]
    values = [[{**_numbers(r.metrics.get("summary")), **_numbers(r.metrics.get("time"), "time.")} for r in g]
              for _, g in groups]
    keys: list[str] = []
    for group in values:
        for v in group:
            keys += [k for k in v if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "run", "scenario", "strategy", "seeds", "seed_list"]
                   + [f"{k}_{stat}" for k in keys for stat in ("mean", "std")])
        for (kind, group), numbers in zip(groups, values):
            first = group[0]
            row: list[Any] = [kind, first.group or first.label, first.setting("scenario"), first.strategy, len(group),
                              " ".join(r.setting("seed") for r in group)]
            for k in keys:
                xs = [v[k] for v in numbers if k in v]
                row += [statistics.fmean(xs) if xs else "", statistics.stdev(xs) if len(xs) > 1 else ""]
            w.writerow(row)
    return path


def write_report(run_dirs: Iterable[str | Path], out: Path, kinds: Registry | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``seeds.csv`` and the PNG plots into ``out``.
    ``kinds``: the registered scenario kinds (default: the first-party ones)."""
    run_dirs = list(run_dirs)
    runs = load_runs(run_dirs)
    kinds = kinds if kinds is not None else default_manager().kinds
    for r in runs:  # a run of a kind no loaded plugin registers: one line, nothing written
        kind_for(kinds, r.kind, f"run folder {str(r.path)!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = report_sections(runs, kinds, out)
    figures = [fig for section in sections for fig in section.figures]
    md = "\n\n".join(section.markdown.strip() for section in sections if section.markdown.strip()) + "\n"
    sweeps = sweep_lines(run_dirs)
    if sweeps:
        md = "\n".join(sweeps) + "\n\n" + md
    figure_list = "\n".join(f"![{md_escape(caption)}]({path.name})" for caption, path in figures)
    (out / "report.md").write_text("# cfs report\n\n" + md + "\n" + figure_list + "\n")
    (out / "report.html").write_text(html_page(runs, md, figures))
    return {"markdown": out / "report.md", "html": out / "report.html", "seeds": write_seed_csv(runs, out / "seeds.csv"),
            **{path.stem: path for _, path in figures}}
