"""Compare finished runs: a Markdown table, a self-contained HTML page and PNG plots.

A run folder is what ``cfs bench`` writes (``metrics.json`` and ``run.json``). Each kind of
run gets the pictures its literature uses: class-incremental runs the accuracy on all seen
classes after each experience (one line per run), the accuracy-matrix heatmaps and the
forgetting of each experience; FSCIL runs (``metrics.json`` key ``fscil``) the per-session
accuracy curve; few-shot runs (``kind: episodic``) the mean accuracy with its 95 % interval.
The HTML page inlines every plot as a base64 PNG so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cfs.errors import CfsError
from cfs.evaluation import plots


@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path
    label: str
    metrics: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.metrics.get("kind") == "episodic" or "episodic" in self.metrics:
            return "episodic"
        return "fscil" if "fscil" in self.metrics else "class-incremental"

    @property
    def episodic(self) -> dict[str, Any]:
        """The few-shot summary (``accuracy``, ``ci95``, ``episodes``) wherever it was written."""
        if isinstance(self.metrics.get("episodic"), dict):
            block = self.metrics["episodic"]
            return block.get("summary", block)
        return self.metrics.get("summary", {})


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


def _pct(v: Any, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.{digits}f}"


def markdown_tables(runs: list[Run]) -> str:
    """One table per kind of run present."""
    out = []
    ci = [r for r in runs if r.kind in ("class-incremental", "fscil")]
    if ci:
        out += ["| run | scenario | final acc % | avg inc acc % | avg acc % | forgetting % | BWT % | FWT % | time s |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ci:
            s, t = r.metrics.get("summary", {}), r.metrics.get("time", {})
            out.append(f"| {r.label} | {r.metrics.get('scenario', '')} | {_pct(s.get('last_accuracy'))} | "
                       f"{_pct(s.get('average_incremental_accuracy'))} | {_pct(s.get('average_accuracy'))} | "
                       f"{_pct(s.get('forgetting'))} | {_pct(s.get('backward_transfer'))} | "
                       f"{_pct(s.get('forward_transfer'))} | {t.get('total_seconds', 0):.1f} |")
    fscil = [r for r in runs if r.kind == "fscil"]
    if fscil:
        n = max(len(r.metrics["fscil"]["session_accuracy"]) for r in fscil)
        out += ["", "FSCIL accuracy on all seen classes after each session (%):", "",
                "| run | " + " | ".join(f"s{k}" for k in range(n)) + " | avg | PD |",
                "|---|" + "---:|" * (n + 2)]
        for r in fscil:
            f = r.metrics["fscil"]
            accs = list(f["session_accuracy"]) + [None] * (n - len(f["session_accuracy"]))
            out.append(f"| {r.label} | " + " | ".join(_pct(v) for v in accs)
                       + f" | {_pct(f.get('average_accuracy'))} | {_pct(f.get('performance_drop'))} |")
    epi = [r for r in runs if r.kind == "episodic"]
    if epi:
        out += ["", "| run | scenario | accuracy % | 95% CI | episodes |", "|---|---|---:|---:|---:|"]
        for r in epi:
            e = r.episodic
            out.append(f"| {r.label} | {r.metrics.get('scenario', '')} | {_pct(e.get('accuracy'), 2)} | "
                       f"+-{_pct(e.get('ci95'), 2)} | {e.get('episodes', '-')} |")
    return "\n".join(out).strip() + "\n"


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def make_plots(runs: list[Run], out: Path) -> list[tuple[str, Path]]:
    """Write every PNG into ``out``; return (caption, path) in page order."""
    figures: list[tuple[str, Path]] = []
    ci = [r for r in runs if r.kind == "class-incremental" and r.metrics.get("seen_accuracy")]
    if ci:
        path = out / "seen_accuracy.png"
        plots.plot_lines({r.label: r.metrics["seen_accuracy"] for r in ci}, path,
                         "Accuracy on all seen classes after each experience", "experience", "accuracy (%)")
        figures.append(("Accuracy on all seen classes after each experience", path))
        forg = {r.label: r.metrics.get("forgetting_per_experience") or [] for r in ci}
        if any(forg.values()):
            path = out / "forgetting.png"
            plots.plot_grouped_bars(forg, path, "Forgetting per experience (max earlier accuracy - final)",
                                    "experience", "forgetting (%)")
            figures.append(("Forgetting per experience", path))
    fscil = [r for r in runs if r.kind == "fscil"]
    if fscil:
        path = out / "fscil_sessions.png"
        plots.plot_lines({r.label: r.metrics["fscil"]["session_accuracy"] for r in fscil}, path,
                         "FSCIL: accuracy on all seen classes per session", "session", "accuracy (%)")
        figures.append(("FSCIL per-session accuracy", path))
    for r in runs:
        if r.kind != "episodic" and r.metrics.get("accuracy_matrix"):
            path = out / f"accuracy_matrix_{_safe(r.label)}.png"
            plots.plot_accuracy_matrix(np.array(r.metrics["accuracy_matrix"]), path,
                                       f"{r.metrics.get('scenario', '')} / {r.label}")
            figures.append((f"Accuracy matrix: {r.label}", path))
    epi = [r for r in runs if r.kind == "episodic" and r.episodic.get("accuracy") is not None]
    if epi:
        path = out / "fewshot_accuracy.png"
        plots.plot_intervals({r.label: r.episodic["accuracy"] for r in epi},
                             {r.label: r.episodic.get("ci95") or 0.0 for r in epi}, path,
                             "Few-shot accuracy with its 95% interval")
        figures.append(("Few-shot accuracy with its 95% interval", path))
    return figures


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


def write_report(run_dirs: Iterable[str | Path], out: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNG plots into ``out``."""
    runs = load_runs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = make_plots(runs, out)
    md = markdown_tables(runs)
    figure_list = "\n".join(f"![{caption}]({path.name})" for caption, path in figures)
    (out / "report.md").write_text("# cfs report\n\n" + md + "\n" + figure_list + "\n")
    (out / "report.html").write_text(html_page(runs, md, figures))
    return {"markdown": out / "report.md", "html": out / "report.html",
            **{path.stem: path for _, path in figures}}
