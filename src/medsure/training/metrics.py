"""Validation metrics used for early stopping (pure functions)."""
from __future__ import annotations

import numpy as np

from medsure.artifact import softmax


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of logits ``(N, K)`` against labels ``(N,)``."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def auc(logits: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC; macro one-vs-rest for K > 2. NaN when a class is absent from ``labels``."""
    from sklearn.metrics import roc_auc_score

    k = logits.shape[1]
    if len(np.unique(labels)) < k:
        return float("nan")
    probs = softmax(logits.astype(np.float64), axis=1)
    if k == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


def mean_dice(pred_labels: np.ndarray, masks: np.ndarray, n_classes: int) -> float:
    """Dice per image and foreground class, averaged; empty prediction and truth count as 1.

    Parameters
    ----------
    pred_labels, masks : int arrays (N, H, W)
    n_classes : K including background (class 0, excluded)
    """
    n = pred_labels.shape[0]
    pred = pred_labels.reshape(n, -1)
    true = masks.reshape(n, -1)
    scores = []
    for c in range(1, n_classes):  # loop over classes only (K is tiny), vectorised over pixels
        p, t = pred == c, true == c
        inter = np.sum(p & t, axis=1)
        denom = p.sum(axis=1) + t.sum(axis=1)
        scores.append(np.where(denom == 0, 1.0, 2.0 * inter / np.maximum(denom, 1)))
    return float(np.mean(scores))
