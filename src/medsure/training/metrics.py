"""Validation metrics used for early stopping (pure functions).

They are the report's metrics, from :mod:`medsure.core`, so the number the trainer selects
``best.pt`` by is the number the report shows for the same predictions.
"""

from __future__ import annotations

import numpy as np

from medsure.core import dice_per_label, macro_ovr_auroc, softmax
from medsure.core import mean_dice as mean_of_dice


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of logits ``(N, K)`` against labels ``(N,)``."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def auc(logits: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of logits ``(N, K)`` for labels ``(N,)``: binary for K = 2, macro one-vs-rest
    for K > 2 (:func:`medsure.core.macro_ovr_auroc`). NaN when a class is absent from ``labels``."""
    return macro_ovr_auroc(softmax(np.asarray(logits, dtype=np.float64), axis=1), np.asarray(labels))


def mean_dice(pred_labels: np.ndarray, masks: np.ndarray, n_classes: int) -> float:
    """The report's mean Dice (:func:`medsure.core.mean_dice` of :func:`medsure.core.dice_per_label`).

    An image where a label is absent from both prediction and mask does not count for that
    label (undefined, not 1); NaN when no Dice is defined at all, which the trainer treats as
    "no improvement".

    Parameters
    ----------
    pred_labels, masks : int arrays (N, H, W)
    n_classes : K including background (class 0, excluded)
    """
    return mean_of_dice(dice_per_label(pred_labels, masks, n_classes))
