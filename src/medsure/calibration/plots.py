"""Reliability diagrams (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:  # a results type, for annotations only: plots draw, they compute nothing
    from medsure.calibration.metrics import BinnedCalibration


def plot_reliability(diagrams: dict[str, BinnedCalibration], *, title: str = "Reliability diagram"):
    """One panel per diagram: accuracy vs confidence per bin, bar width = bin, count histogram below."""
    fig, axes = plt.subplots(
        2,
        len(diagrams),
        figsize=(4.2 * len(diagrams), 5.2),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]},
        sharex=True,
    )
    for col, (name, d) in enumerate(diagrams.items()):
        ax, hist = axes[0, col], axes[1, col]
        left, width = d.edges[:-1], np.diff(d.edges)
        keep = d.nonempty
        ax.bar(
            left[keep],
            d.mean_outcome[keep],
            width=width[keep],
            align="edge",
            edgecolor="#335",
            color="#8ab",
            label="accuracy",
        )
        ax.bar(
            left[keep],
            d.mean_score[keep] - d.mean_outcome[keep],
            bottom=d.mean_outcome[keep],
            width=width[keep],
            align="edge",
            color="#e88",
            alpha=0.5,
            label="gap",
        )
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
        ax.set_title(name), ax.set_ylabel("accuracy")
        ax.legend(loc="upper left", fontsize=8)
        hist.bar(left, d.count, width=width, align="edge", color="#778")
        hist.set_xlabel("confidence"), hist.set_ylabel("cases")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
