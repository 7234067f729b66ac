"""Compare finished runs: a Markdown table, a self-contained HTML page and PNG plots.

A run folder is what ``cfs bench`` writes (``metrics.json`` and ``run.json``). Runs are
grouped by their scenario kind and each registered kind writes its own section
(:meth:`cfs.kinds.ScenarioKind.report`) with the tables and pictures its literature uses:
class-incremental runs the accuracy on all seen classes after each experience, the
accuracy-matrix heatmaps and the forgetting of each experience; FSCIL runs the per-session
accuracy; few-shot runs the mean accuracy with its 95 % interval. The HTML page inlines every
plot as a base64 PNG so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cfs.errors import CfsError
from cfs.kinds import ReportSection, default_manager, kind_for
from cfs.registry import Registry


@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path
    label: str
    metrics: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str | None:
        """The scenario kind the run was written by (``metrics.json``, else ``run.json``)."""
        return self.metrics.get("kind") or (self.info.get("scenario") or {}).get("kind")


def _run_folders(paths: Iterable[str | Path]) -> list[Path]:
    """Each argument is a run folder, or a folder whose sub-folders are runs (``--out`` of a
    multi-strategy bench)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise CfsError(f"run folder {str(p)!r} does not exist; pass folders written by `cfs bench`")
        if (p / "metrics.json").is_file():
            found.append(p)
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / "metrics.json").is_file()) if p.is_dir() else []
        if not subs:
            raise CfsError(f"{str(p)!r} holds no metrics.json; pass folders written by `cfs bench`")
        found += subs
    return found


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Read every run; labels are strategy names, made unique with the folder name."""
    runs = []
    for p in _run_folders(paths):
        try:
            metrics = json.loads((p / "metrics.json").read_text())
            info = json.loads((p / "run.json").read_text()) if (p / "run.json").is_file() else {}
        except json.JSONDecodeError as exc:
            raise CfsError(f"{str(p)!r}: metrics.json or run.json is not valid JSON ({exc.msg})") from None
        runs.append(Run(p, str(metrics.get("strategy") or p.name), metrics, info))
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({r.path.name})"
    return runs


def report_sections(runs: list[Run], kinds: Registry, out: Path) -> list[ReportSection]:
    """Each kind's section for its runs, in the registry's (alphabetical) order of kinds."""
    return [kinds.get(name).report([r for r in runs if r.kind == name], out)
            for name in kinds if any(r.kind == name for r in runs)]


def _markdown_to_html(md: str) -> str:
    """The report's own pipe tables and plain lines as HTML (no Markdown library needed)."""
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
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
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


def write_report(run_dirs: Iterable[str | Path], out: Path, kinds: Registry | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNG plots into ``out``. ``kinds``: the
    registered scenario kinds (default: the first-party ones)."""
    runs = load_runs(run_dirs)
    kinds = kinds if kinds is not None else default_manager().kinds
    for r in runs:  # a run of a kind no loaded plugin registers: one line, nothing written
        kind_for(kinds, r.kind, f"run folder {str(r.path)!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = report_sections(runs, kinds, out)
    figures = [fig for section in sections for fig in section.figures]
    md = "\n\n".join(section.markdown.strip() for section in sections if section.markdown.strip()) + "\n"
    figure_list = "\n".join(f"![{caption}]({path.name})" for caption, path in figures)
    (out / "report.md").write_text("# cfs report\n\n" + md + "\n" + figure_list + "\n")
    (out / "report.html").write_text(html_page(runs, md, figures))
    return {"markdown": out / "report.md", "html": out / "report.html",
            **{path.stem: path for _, path in figures}}
