"""Risk-coverage plots (matplotlib, Agg backend): they draw curves computed by the analysis."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:  # a results type, for annotations only: plots draw, they compute nothing
    from medsure.failure.metrics import RiskCoverageCurve


def plot_risk_coverage(
    curves: dict[str, RiskCoverageCurve],
    *,
    title: str = "",
    review_coverage: float | None = None,
    target_risk: float | None = None,
):
    """Selective and generalized risk against coverage for each curve (``"oracle"`` dotted)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, c in curves.items():
        style = {"color": "k", "ls": ":"} if name == "oracle" else {}
        ax1.step(np.r_[0, c.coverage], np.r_[c.selective_risk[0], c.selective_risk], where="pre", label=name, **style)
        ax2.plot(np.r_[0, c.coverage], np.r_[0, c.generalized_risk], label=name, **style)
    if target_risk is not None:
        ax1.axhline(target_risk, color="r", lw=0.8, ls="--", label="target risk")
    if review_coverage is not None:
        ax1.axvline(review_coverage, color="g", lw=0.8, ls="--", label="review threshold")
    ax1.set_xlabel("coverage"), ax1.set_ylabel("selective risk (error among accepted)")
    ax2.set_xlabel("coverage"), ax2.set_ylabel("generalized risk (accepted errors / all)")
    ax1.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
