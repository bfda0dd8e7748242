"""Pictures for metadata and report folders: confusion matrices, and the serving monitor's trends."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: assets run in worker processes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


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


def serving_trends_png(daily: pd.DataFrame, drift_threshold: float, test_accuracy: float | None, title: str) -> bytes:
    """The serving monitor's days: volume, latency p50/p99, PSI against the drift threshold, and the confident
    share and top-1 acceptance against the test accuracy."""
    days = pd.to_datetime(daily["day"])
    figure, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    axes[0].bar(days, daily["predictions"], color="tab:blue")
    axes[0].set_ylabel("predictions")
    for column, style in (("latency_p50_ms", "-o"), ("latency_p99_ms", "--o")):
        axes[1].plot(
            days, daily[column].astype(float), style, label=column.removeprefix("latency_").removesuffix("_ms")
        )
    axes[1].set_ylabel("latency (ms)")
    for column, style in (("domain_psi", "-o"), ("attribute_psi", "--o")):
        axes[2].plot(days, daily[column].astype(float), style, label=column.removesuffix("_psi"))
    axes[2].axhline(drift_threshold, color="tab:red", linewidth=1, label="drift threshold")
    axes[2].set_ylabel("PSI vs train")
    for column, style in (("confident_share", "-o"), ("top1_acceptance", "--o")):
        axes[3].plot(days, daily[column].astype(float), style, label=column.replace("_", " "))
    if test_accuracy is not None:
        axes[3].axhline(test_accuracy, color="tab:green", linewidth=1, label="test accuracy")
    axes[3].set_ylim(0, 1.05)
    axes[3].set_ylabel("share")
    for ax in axes[1:]:
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_title(title, fontsize=9)
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
