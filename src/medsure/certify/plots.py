"""Figures of certified robustness (outer layer: matplotlib only here and in report.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from medsure.segmentation.plots import _LABEL_COLOURS  # the same colour per label as the segmentation figures

_ABSTAIN_COLOUR = (1.0, 0.0, 1.0, 0.85)  # magenta: no class is certified there


def _label_cmap(k: int) -> ListedColormap:
    """Colours of labels 0..K-1 (background transparent) and of abstain, drawn as label K."""
    colours = _LABEL_COLOURS[np.arange(k) % len(_LABEL_COLOURS)].copy()
    colours[0] = (0, 0, 0, 0)
    return ListedColormap(np.vstack([colours, _ABSTAIN_COLOUR]))


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def overlay_figure(
    images: np.ndarray,
    masks: np.ndarray | None,
    certified: np.ndarray,
    *,
    n_classes: int,
    titles: Sequence[str],
):
    """One row per image: the image, the truth, the certified map with abstained pixels in magenta.

    Parameters
    ----------
    images : uint8 (R, H, W[, C])
    masks : int (R, H, W) truth, or None
    certified : int (R, H, W), -1 for abstain
    n_classes : K
    titles : one caption per row
    """
    rows = len(images)
    cols = 3 if masks is not None else 2
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    cmap = _label_cmap(n_classes)
    for r in range(rows):
        panels: list[tuple[str, np.ndarray | None]] = [("image", None)]
        if masks is not None:
            panels.append(("truth", np.asarray(masks[r])))
        panels.append(("certified (magenta: abstain)", np.where(certified[r] < 0, n_classes, certified[r])))
        for c, (name, labels) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(_grey(images[r]), cmap="gray" if _grey(images[r]).ndim == 2 else None)
            if labels is not None:
                ax.imshow(labels, cmap=cmap, vmin=-0.5, vmax=n_classes + 0.5, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{titles[r]}\n{name}" if c == 0 else name, fontsize=7)
    fig.tight_layout()
    return fig


def dice_vs_sigma_figure(sigmas: Sequence[float], series: Mapping[str, Sequence[float | None]], ylabel: str):
    """Lines of a metric against the noise level sigma, one per series (e.g. certified, plain under noise)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    order = np.argsort(np.asarray(sigmas, dtype=float))
    xs = np.asarray(sigmas, dtype=float)[order]
    for name, values in series.items():
        ys = np.array([np.nan if v is None else float(v) for v in values])[order]
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("noise sigma (radius = sigma Phi^-1(tau))")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def accuracy_radius_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]):
    """Certified accuracy against the L2 radius, one line per run (Cohen et al.'s figure)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for name, (grid, accuracy) in curves.items():
        ax.step(grid, accuracy, where="post", label=name)
    ax.set_xlabel("L2 radius (image in [0, 1] units)")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
