"""The joint view of a joint (UML) model's test cases (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

if TYPE_CHECKING:  # a results type, for annotations only: plots draw, they compute nothing
    from medsure.evidential.analysis import JointCase


def _literal(text: str) -> str:
    return text.replace("$", r"\$")  # a '$' in an id would start matplotlib's math mode


def plot_joint_cases(cases: list[JointCase]):
    """One row per case: the image, the true mask (contour) and the predicted mask, the pixel
    uncertainty ``u`` map (shared colour scale [0, 1], colour bar beside the column, not over it).
    The row title names the case, its true class, the conformal class set and the image ``u``."""
    rows = max(1, len(cases))
    fig, axes = plt.subplots(rows, 3, figsize=(9.6, 3.0 * rows), squeeze=False)
    shown = None
    for row, case in enumerate(cases):
        ax_img, ax_mask, ax_u = axes[row]
        if case.thumbnail is not None:
            ax_img.imshow(case.thumbnail, cmap="gray" if case.thumbnail.ndim == 2 else None)
        ax_img.set_title(_literal(f"{case.id}\ntrue: {case.true_class}"), fontsize=8)
        ax_mask.imshow(case.predicted_mask, cmap="Blues", vmin=0, vmax=max(1, int(case.predicted_mask.max())))
        if case.mask is not None and case.mask.any():
            ax_mask.contour(case.mask > 0, levels=[0.5], colors="red", linewidths=1.0)
        dice = "n/a" if case.dice is None else f"{case.dice:.2f}"
        ax_mask.set_title(f"predicted mask (blue), truth (red)\nDice {dice}", fontsize=8)
        shown = ax_u.imshow(case.pixel_u, cmap="magma", vmin=0.0, vmax=1.0)
        chosen = "{" + ", ".join(case.prediction_set) + "}"
        ax_u.set_title(_literal(f"pixel u; set {chosen}\nimage u = {case.class_u:.2f}"), fontsize=8)
        for ax in (ax_img, ax_mask, ax_u):
            ax.set_xticks([]), ax.set_yticks([])
    if not cases:
        for ax in axes[0]:
            ax.axis("off")
    fig.tight_layout()
    if shown is not None:
        fig.colorbar(shown, ax=axes[:, 2].tolist(), fraction=0.05, pad=0.02, label="pixel u = K/S")
    return fig
