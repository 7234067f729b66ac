"""Figures saved beside a run's numbers (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_accuracy_matrix(R: np.ndarray, path: Path, title: str) -> None:
    """Heatmap of R[i, j] (rows: after training i; columns: tested on j), in percent."""
    R = np.asarray(R, float) * 100
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * R.shape[1], 1.0 + 0.5 * R.shape[0]), dpi=100)
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
