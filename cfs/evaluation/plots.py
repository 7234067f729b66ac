"""Figures saved beside a run's numbers (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    """matplotlib's pyplot on the headless Agg backend, imported on the first figure (it costs
    most of a second, which ``cfs list`` and runs without plots need not pay)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_matrix(R: np.ndarray, path: Path, title: str) -> None:
    """Heatmap of R[i, j] (rows: after training i; columns: tested on j), in percent."""
    plt = _pyplot()
    R = np.asarray(R, float) * 100
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.6 * R.shape[1]), max(4.0, 1.0 + 0.5 * R.shape[0])), dpi=100)
    im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
    for (i, j), v in np.ndenumerate(R):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="w" if v < 60 else "k")
    ax.set_xlabel("tested on experience")
    ax.set_ylabel("after training experience")
    ax.set_xticks(range(R.shape[1]))
    ax.set_yticks(range(R.shape[0]))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _finish(fig, ax, path: Path) -> None:
    plt = _pyplot()
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_lines(series: dict[str, list[float | None]], path: Path, title: str, xlabel: str, ylabel: str) -> None:
    """One line per label (values in 0..1 shown in percent); ``None`` points are skipped."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, ys in series.items():
        xs = [i for i, v in enumerate(ys) if v is not None]
        ax.plot(xs, [100 * ys[i] for i in xs], marker="o", label=label)
    longest = max((len(v) for v in series.values()), default=1)
    ax.set_xticks(range(longest))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _finish(fig, ax, path)


def plot_grouped_bars(series: dict[str, list[float]], path: Path, title: str, xlabel: str, ylabel: str) -> None:
    """Bars per x position, one colour per label (values in 0..1 shown in percent)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    labels = list(series)
    width = 0.8 / max(len(labels), 1)
    longest = max((len(v) for v in series.values()), default=0)
    for k, label in enumerate(labels):
        ys = np.asarray(series[label], float) * 100
        ax.bar(np.arange(len(ys)) + (k - (len(labels) - 1) / 2) * width, ys, width, label=label)
    ax.set_xticks(range(longest))
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _finish(fig, ax, path)


def plot_intervals(means: dict[str, float], halves: dict[str, float], path: Path, title: str) -> None:
    """Mean accuracy per label with its (95 %) interval as an error bar, in percent."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    labels = list(means)
    ax.bar(range(len(labels)), [100 * means[k] for k in labels], yerr=[100 * halves[k] for k in labels],
           capsize=6, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%) with 95% interval")
    ax.set_title(title, fontsize=10)
    _finish(fig, ax, path)
