"""Figures for segmentation uncertainty (outer layer: matplotlib only here and in report.py)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

_LABEL_COLOURS = np.array(
    [
        [0, 0, 0, 0],
        [0.9, 0.2, 0.2, 0.45],
        [0.2, 0.5, 0.95, 0.45],
        [0.2, 0.8, 0.3, 0.45],
        [0.9, 0.7, 0.1, 0.45],
        [0.7, 0.3, 0.8, 0.45],
    ]
)


def _label_cmap(k: int) -> ListedColormap:
    colours = _LABEL_COLOURS[np.arange(k) % len(_LABEL_COLOURS)]
    colours[0] = (0, 0, 0, 0)
    return ListedColormap(colours)


def _background(ax, thumbnail: np.ndarray | None, shape: tuple[int, int]) -> None:
    h, w = shape
    if thumbnail is None:
        ax.imshow(np.zeros(shape), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(thumbnail, cmap="gray" if thumbnail.ndim == 2 else None, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def overlay_figure(
    *,
    masks: np.ndarray,
    predicted: np.ndarray,
    uncertainty: np.ndarray,
    conformal: np.ndarray | None,
    titles: Sequence[str],
    n_classes: int,
    thumbnails: np.ndarray | None = None,
    uncertainty_name: str = "entropy",
    alpha: float | None = None,
):
    """Rows of images: GT, prediction, uncertainty map, error map, conformal mask.

    Parameters
    ----------
    masks, predicted : int (R, H, W); uncertainty : float (R, H, W)
    conformal : bool (R, K - 1, H, W) conformal masks or None
    titles : one caption per row; thumbnails : optional (R, h, w[, C]) uint8 backgrounds
    """
    rows = masks.shape[0]
    cols = 5 if conformal is not None else 4
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.1 * rows), squeeze=False)
    cmap = _label_cmap(n_classes)
    vmax = (
        float(np.log(n_classes)) if uncertainty_name in ("entropy", "expected_entropy", "mutual_information") else 1.0
    )
    for r in range(rows):
        thumb = None if thumbnails is None else thumbnails[r]
        shape = masks.shape[1:]
        ax = axes[r, 0]
        _background(ax, thumb, shape)
        ax.imshow(masks[r], cmap=cmap, vmin=0, vmax=n_classes - 1, interpolation="nearest")
        ax.set_ylabel(titles[r], fontsize=7)
        ax = axes[r, 1]
        _background(ax, thumb, shape)
        ax.imshow(predicted[r], cmap=cmap, vmin=0, vmax=n_classes - 1, interpolation="nearest")
        ax = axes[r, 2]
        im = ax.imshow(uncertainty[r], cmap="magma", vmin=0, vmax=vmax)
        ax = axes[r, 3]
        ax.imshow(masks[r] != predicted[r], cmap="Reds", vmin=0, vmax=1, interpolation="nearest")
        if conformal is not None:
            ax = axes[r, 4]
            _background(ax, thumb, shape)
            _mask_contours(ax, conformal[r].any(axis=0), masks[r] > 0)
    heads = ["ground truth", "prediction", uncertainty_name, "error", f"conformal mask (α={alpha})"]
    for c in range(cols):
        axes[0, c].set_title(heads[c], fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, 2].tolist(), fraction=0.046, pad=0.02, shrink=0.6)
    return fig


def _mask_contours(ax, conformal: np.ndarray, truth: np.ndarray | None) -> None:
    """The conformal mask as a yellow contour over the image (the image stays visible), the
    ground truth as a cyan contour; an empty mask draws nothing."""
    for mask, style in ((conformal, {"colors": "yellow", "linewidths": 1.0}),
                        (truth, {"colors": "cyan", "linewidths": 0.8, "linestyles": "dashed"})):  # fmt: skip
        if mask is None or not mask.any():
            continue
        # contour a nearest-upsampled copy: pixel edges come out square, not as diamonds
        f = 4
        h, w = mask.shape
        big = np.kron(mask.astype(float), np.ones((f, f)))
        xs, ys = (np.arange(w * f) + 0.5) / f - 0.5, (np.arange(h * f) + 0.5) / f - 0.5
        ax.contour(xs, ys, big, levels=[0.5], **style)


def conformal_overlay_figure(
    *,
    thumbnails: np.ndarray | None,
    conformal: np.ndarray,
    truth: np.ndarray | None,
    titles: Sequence[str],
    alpha: float,
):
    """One panel per image: the image with the conformal mask's contour (yellow) and the ground
    truth's contour (cyan, dashed).

    Parameters
    ----------
    thumbnails : uint8 (R, h, w[, C]) or None (black background)
    conformal : bool (R, K - 1, H, W); the union over labels is drawn
    truth : int (R, H, W) ground truth or None
    """
    rows = conformal.shape[0]
    cols = min(4, max(rows, 1))
    nrows = (rows + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(2.4 * cols, 2.5 * nrows), squeeze=False)
    shape = conformal.shape[2:]
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= rows:
            ax.axis("off")
            continue
        _background(ax, None if thumbnails is None else thumbnails[i], shape)
        _mask_contours(ax, conformal[i].any(axis=0), None if truth is None else truth[i] > 0)
        ax.set_title(titles[i], fontsize=7)
    fig.suptitle(f"conformal mask (yellow, α = {alpha}) and ground truth (cyan, dashed)", fontsize=8)
    fig.tight_layout()
    return fig


def reliability_figure(panels: Sequence[tuple[str, dict[str, np.ndarray], float]]):
    """Pixel reliability diagrams, one panel per (title, bins, ece).

    ``bins`` is the output of :func:`medsure.segmentation.calibration.calibration_bins`.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    for ax, (title, bins, ece) in zip(axes[0], panels, strict=False):
        filled = bins["count"] > 0
        edges = bins["edges"]
        centres = 0.5 * (edges[:-1] + edges[1:])
        width = edges[1] - edges[0]
        ax.bar(
            centres[filled],
            bins["accuracy"][filled],
            width=width * 0.9,
            color="#58a",
            edgecolor="#235",
            label="accuracy",
        )
        ax.bar(
            centres[filled],
            bins["confidence"][filled] - bins["accuracy"][filled],
            bottom=bins["accuracy"][filled],
            width=width * 0.9,
            color="#e88",
            alpha=0.6,
            label="gap",
        )
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}\nECE {ece:.4f}", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def segment_and_ueo_figure(
    segment_conf: np.ndarray,
    segment_dice: np.ndarray,
    thresholds: np.ndarray,
    ueo_curve: np.ndarray,
    image_unc: np.ndarray,
    image_dice: np.ndarray,
    uncertainty_name: str = "entropy",
):
    """Three panels: segment confidence vs Dice, UEO curve, image uncertainty vs Dice."""
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.2))
    axes[0].scatter(segment_conf, segment_dice, s=8, alpha=0.6)
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[0].set_xlabel("mean confidence in predicted structure")
    axes[0].set_ylabel("Dice of the structure")
    axes[0].set_title("segment-level calibration", fontsize=9)
    axes[1].plot(thresholds, ueo_curve)
    best = int(np.argmax(ueo_curve))
    axes[1].axvline(thresholds[best], color="r", ls=":", lw=0.8)
    axes[1].set_xlabel(f"{uncertainty_name} threshold")
    axes[1].set_ylabel("UEO (Dice with error map)")
    axes[1].set_title(f"uncertainty-error overlap, best {ueo_curve[best]:.3f}", fontsize=9)
    keep = np.isfinite(image_dice)
    axes[2].scatter(image_unc[keep], image_dice[keep], s=8, alpha=0.6)
    axes[2].set_xlabel(f"image {uncertainty_name}")
    axes[2].set_ylabel("image Dice")
    axes[2].set_title("Dice prediction from uncertainty", fontsize=9)
    fig.tight_layout()
    return fig


def fnr_figure(lambdas: np.ndarray, risk_curves: dict[str, np.ndarray], chosen: dict[str, float], alpha: float):
    """Calibration-set mean FNR against the threshold λ for each label, with the chosen λ̂."""
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for name, curve in risk_curves.items():
        (line,) = ax.plot(lambdas, curve, label=name)
        ax.axvline(chosen[name], color=line.get_color(), ls=":", lw=0.8)
    ax.axhline(alpha, color="k", ls="--", lw=0.8, label=f"α = {alpha}")
    ax.set_xlabel("pixel threshold λ")
    ax.set_ylabel("mean FNR on calibration")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
