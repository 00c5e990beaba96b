"""Basic performance summaries of a prediction artifact (pure functions, no I/O).

These are the numbers a report opens with, before any uncertainty analysis: accuracy, AUC and
the confusion matrix for classifiers; per-label Dice for segmenters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix

from medsure.artifact import Predictions
from medsure.calibration.metrics import NLL_CLIP, negative_log_likelihood
from medsure.core import dice_per_label, macro_ovr_auroc, mean_dice, nanmean, undefined_as_none
from medsure.validation import input_error


def classification_summary(pred: Predictions) -> dict[str, Any]:
    """Accuracy, loss, AUC (binary, or macro one-vs-rest), per-class precision / recall / F1 and
    the confusion matrix.

    Returns
    -------
    dict with ``n``, ``accuracy``, ``log_loss`` (mean cross-entropy of the predictive
    probabilities, probabilities clipped at ``log_loss_clip``, as
    :func:`medsure.calibration.negative_log_likelihood`), ``auc`` (None when a class is absent
    from the labels), ``per_class`` ({class name: {precision, recall, f1, support}}; precision is
    None for a class never predicted, recall None for a class absent from the labels, F1 None
    when either is — scikit-learn's ``precision_recall_fscore_support`` would report 0 with a
    warning), ``macro_f1`` (mean of the defined F1), ``confusion_matrix`` (K, K) list of lists
    (rows: true class), ``class_names``.
    """
    if pred.task != "classification" or pred.labels is None:
        given = f"a {pred.task} prediction file" + ("" if pred.labels is not None else " without 'labels'")
        raise input_error("predictions", given, "labelled classification predictions", raw=True)
    probs = pred.probabilities()
    labels = pred.labels
    k = pred.n_classes
    predicted = probs.argmax(axis=1)
    # undefined (None) when a class has no example in this split
    auc = undefined_as_none(macro_ovr_auroc(probs, labels))
    cm = confusion_matrix(labels, predicted, labels=np.arange(k))
    names = [str(c) for c in pred.class_names]
    per_class = {name: _precision_recall_f1(cm, j) for j, name in enumerate(names)}
    f1s = [v["f1"] for v in per_class.values() if v["f1"] is not None]
    return {
        "n": int(labels.shape[0]),
        "accuracy": float(np.mean(predicted == labels)),
        "log_loss": negative_log_likelihood(probs.astype(np.float64), labels),
        "log_loss_clip": NLL_CLIP,
        "auc": auc,
        "per_class": per_class,
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "confusion_matrix": cm.tolist(),
        "class_names": names,
    }


def _precision_recall_f1(cm: np.ndarray, j: int) -> dict[str, Any]:
    """Precision, recall and F1 of class ``j`` from a confusion matrix (rows: true class)."""
    tp, predicted, support = int(cm[j, j]), int(cm[:, j].sum()), int(cm[j].sum())
    precision = tp / predicted if predicted else None
    recall = tp / support if support else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def segmentation_summary(pred: Predictions) -> dict[str, Any]:
    """Mean Dice per foreground label over the images where it is defined, and
    :func:`medsure.core.mean_dice` (the mean of those, the trainer's early-stopping number)."""
    if pred.task != "segmentation" or pred.masks is None:
        given = f"a {pred.task} prediction file" + ("" if pred.masks is not None else " without 'masks'")
        raise input_error("predictions", given, "segmentation predictions with masks", raw=True)
    predicted = pred.probabilities().argmax(axis=1)
    dice = dice_per_label(predicted, pred.masks, pred.n_classes)
    per_label = {str(name): undefined_as_none(nanmean(dice[:, j])) for j, name in enumerate(pred.class_names[1:])}
    return {"n": int(pred.n_samples), "dice_per_label": per_label, "mean_dice": undefined_as_none(mean_dice(dice))}
