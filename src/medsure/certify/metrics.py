"""Metrics of certified segmentation and classification, as Laousy et al. (2023) report them
(pure numpy; Dice from :mod:`medsure.core.dice`, one empty-structure convention)."""

from __future__ import annotations

import numpy as np

from medsure.core.dice import dice_per_label

__all__ = [
    "certified_dice",
    "non_abstained_dice",
    "abstain_rate",
    "certified_accuracy_curve",
]


def certified_dice(certified: np.ndarray, masks: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice per foreground label with abstained pixels (-1) counted as wrong.

    An abstained pixel is given an extra label K that no truth has: it is never a true positive
    and, where the truth is label c, a false negative of c.

    Parameters
    ----------
    certified : int ndarray (N, H, W), labels in ``[0, K)`` or -1
    masks : int ndarray (N, H, W), the truth
    n_classes : K (background included)

    Returns
    -------
    float64 ndarray (N, K - 1), NaN where a label is absent from truth and certified map.
    """
    certified = np.asarray(certified)
    coded = np.where(certified < 0, n_classes, certified)
    return dice_per_label(coded, np.asarray(masks), n_classes + 1)[:, : n_classes - 1]


def non_abstained_dice(certified: np.ndarray, masks: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice per foreground label over the certified (non-abstained) pixels only.

    Abstained pixels are set to background in both maps, so they count for no foreground label.

    Returns
    -------
    float64 ndarray (N, K - 1).
    """
    certified, masks = np.asarray(certified), np.asarray(masks)
    kept = certified >= 0
    return dice_per_label(np.where(kept, certified, 0), np.where(kept, masks, 0), n_classes)


def abstain_rate(certified: np.ndarray) -> np.ndarray:
    """Fraction of abstained pixels per image (segmentation) or 0/1 per image (classification).

    Parameters
    ----------
    certified : int ndarray (N, ...) with -1 for abstain

    Returns
    -------
    float64 ndarray (N,).
    """
    certified = np.asarray(certified)
    return (certified < 0).reshape(certified.shape[0], -1).mean(axis=1)


def certified_accuracy_curve(
    predictions: np.ndarray, radii: np.ndarray, labels: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    """Cohen's certified accuracy at each radius: the fraction of images that are certified,
    correct, and certified with a radius of at least r.

    Parameters
    ----------
    predictions : int ndarray (N,), -1 for abstain
    radii : float ndarray (N,)
    labels : int ndarray (N,)
    grid : float ndarray (R,), radii to evaluate

    Returns
    -------
    float64 ndarray (R,).
    """
    correct = (np.asarray(predictions) == np.asarray(labels)) & (np.asarray(predictions) >= 0)
    radii = np.asarray(radii, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    if correct.size == 0:
        return np.full(grid.shape, np.nan)
    return (correct[None, :] & (radii[None, :] >= grid[:, None])).mean(axis=1)
