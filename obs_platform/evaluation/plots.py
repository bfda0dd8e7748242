"""Confusion matrices as PNG images, for the asset's metadata and the report folder."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: assets run in worker processes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_matrix_png(matrix: list[list[int]], labels: list[str], title: str) -> bytes:
    counts = np.asarray(matrix)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.42 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    short = [label if len(label) <= 28 else label[:26] + "…" for label in labels]
    axes.set_xticks(range(len(labels)), short, rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(len(labels)), short, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    if len(labels) <= 20:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                colour = "white" if share[row, column] > 0.5 else "black"
                axes.text(column, row, str(count), ha="center", va="center", fontsize=6, color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
