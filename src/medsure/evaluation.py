"""Basic performance summaries of a prediction artifact (pure functions, no I/O).

These are the numbers a report opens with, before any uncertainty analysis: accuracy, AUC and
the confusion matrix for classifiers; per-label Dice for segmenters.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

from medsure.artifact import Predictions
from medsure.errors import MedsureInputError


def classification_summary(pred: Predictions) -> dict[str, Any]:
    """Accuracy, AUC (binary, or macro one-vs-rest) and confusion matrix.

    Returns
    -------
    dict with ``n``, ``accuracy``, ``auc`` (None when a class is absent from the labels),
    ``confusion_matrix`` (K, K) list of lists (rows: true class), ``class_names``.
    """
    if pred.task != "classification" or pred.labels is None:
        raise MedsureInputError("classification_summary needs a labelled classification artifact")
    probs = pred.probabilities()
    labels = pred.labels
    k = pred.n_classes
    predicted = probs.argmax(axis=1)
    present = np.unique(labels)
    auc: float | None
    if len(present) < k:
        auc = None  # AUC is undefined when a class has no example in this split
    elif k == 2:
        auc = float(roc_auc_score(labels, probs[:, 1]))
    else:
        auc = float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    return {
        "n": int(labels.shape[0]),
        "accuracy": float(np.mean(predicted == labels)),
        "auc": auc,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=np.arange(k)).tolist(),
        "class_names": [str(c) for c in pred.class_names],
    }


def segmentation_summary(pred: Predictions) -> dict[str, Any]:
    """Mean Dice per foreground label (NaN-aware) and over labels."""
    if pred.task != "segmentation" or pred.masks is None:
        raise MedsureInputError("segmentation_summary needs a segmentation artifact with masks")
    from medsure.segmentation.metrics import dice_per_label  # deferred: segmentation imports this layer's peers

    predicted = pred.probabilities().argmax(axis=1)
    dice = dice_per_label(predicted, pred.masks, pred.n_classes)
    per_label = {str(name): _nanmean(dice[:, j]) for j, name in enumerate(pred.class_names[1:])}
    return {"n": int(pred.n_samples), "dice_per_label": per_label,
            "mean_dice": _nanmean(np.array([v for v in per_label.values() if v is not None], dtype=float))}


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None
