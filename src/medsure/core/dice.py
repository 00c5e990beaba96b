"""Dice with one empty-structure convention and one reduction (pure numpy).

Per image and foreground label (label 0 is background and excluded):

- prediction and truth both empty: **NaN** (undefined: nothing to segment and nothing
  predicted), excluded from every mean;
- exactly one of them empty: 0 (a missed structure or a false positive is an error);
- otherwise ``2 |P ∩ T| / (|P| + |T|)``.

This equals MONAI ``compute_dice(include_background=False, ignore_empty=False)`` with its
both-empty value 1 mapped to NaN. :func:`mean_dice` is the one summary number: used by the
trainer's early stopping (``training.metrics.mean_dice``) and by every report.
"""

from __future__ import annotations

import numpy as np

from medsure.core.stats import nanmean
from medsure.validation import input_error

__all__ = ["check_label_maps", "dice_per_label", "mean_dice"]


def check_label_maps(predicted: np.ndarray, masks: np.ndarray, n_classes: int) -> None:
    """Raise unless ``predicted`` and ``masks`` are equal-shape ``(N, H, W)`` labels in ``[0, K)``."""
    if np.shape(predicted) != np.shape(masks) or np.ndim(masks) != 3:
        raise input_error(
            "predicted labels and masks",
            f"shapes {np.shape(predicted)} and {np.shape(masks)}",
            "two equal (N, H, W) shapes",
            raw=True,
        )
    for name, values in (("predicted labels", predicted), ("masks", masks)):
        if np.size(values) and (np.min(values) < 0 or np.max(values) >= n_classes):
            raise input_error(
                name, f"labels in [{np.min(values)}, {np.max(values)}]", f"labels in [0, {n_classes})", raw=True
            )


def dice_per_label(predicted: np.ndarray, masks: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice of every foreground label in every image (convention in the module docstring).

    Parameters
    ----------
    predicted, masks : int ndarray (N, H, W), labels in ``[0, n_classes)``
    n_classes : K, background (label 0) included

    Returns
    -------
    float64 ndarray (N, K - 1); NaN where the label is absent from both maps.
    """
    check_label_maps(predicted, masks, n_classes)
    predicted = np.asarray(predicted).astype(np.int64, copy=False)
    masks = np.asarray(masks).astype(np.int64, copy=False)
    n, k = masks.shape[0], int(n_classes)
    # one bincount per quantity over (image, label) cells: O(N H W), no one-hot maps
    offset = (np.arange(n, dtype=np.int64) * k)[:, None, None]
    cell_pred, cell_true = (predicted + offset).ravel(), (masks + offset).ravel()
    size = n * k
    pred_count = np.bincount(cell_pred, minlength=size).reshape(n, k)[:, 1:]
    true_count = np.bincount(cell_true, minlength=size).reshape(n, k)[:, 1:]
    overlap = np.bincount(cell_pred[cell_pred == cell_true], minlength=size).reshape(n, k)[:, 1:]
    denom = (pred_count + true_count).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * overlap / denom, np.nan)


def mean_dice(dice: np.ndarray) -> float:
    """The one summary Dice: mean over labels of each label's mean over the images where defined.

    It is the mean of the per-label column a report shows (each structure counts once,
    whatever its frequency); labels undefined in every image are left out.

    Parameters
    ----------
    dice : float ndarray (N, K - 1) from :func:`dice_per_label`

    Returns
    -------
    float; NaN when no Dice is defined at all (every structure absent from every image and
    every prediction).
    """
    dice = np.asarray(dice, dtype=np.float64)
    if dice.ndim != 2:
        raise input_error("dice", f"shape {dice.shape}", "(N, K - 1) from dice_per_label", raw=True)
    return nanmean(nanmean(dice, axis=0))  # per-label means (K - 1,), NaN for a label never defined
