"""Tie-aware AUROC (pure numpy).

One formula serves every AUROC in medsure (failure detection, shift detection, the trainer's
validation AUC, the classification summary): the Mann-Whitney statistic with ties counted one
half, computed on blocks of tied scores,

    AUROC = sum_b pos_b (neg_below_b + neg_b / 2) / (n_pos n_neg)

where blocks ``b`` hold equal scores, ``pos_b``/``neg_b`` count (or weigh) the positives and
negatives in the block and ``neg_below_b`` the negatives with a strictly lower score. It equals
``sklearn.metrics.roc_auc_score`` (trapezoidal ROC area) with and without ``sample_weight``.

Undefined: when the positives or the negatives are absent (zero total weight) the AUROC is NaN.
"""

from __future__ import annotations

import numpy as np

from medsure.validation import input_error

__all__ = ["tie_blocks", "auroc_from_tie_blocks", "binary_auroc", "macro_ovr_auroc"]


def tie_blocks(scores: np.ndarray, marked: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group cases into blocks of equal score, highest score first, and sum weights per block.

    The one sort behind every tie-aware ranking metric (AUROC here; AURC, AUGRC, FPR@95 in
    :mod:`medsure.failure.metrics`): a threshold cannot split tied cases.

    Parameters
    ----------
    scores : float ndarray (N,)
    marked : 0/1 or bool ndarray (N,), e.g. positives or errors
    weights : float ndarray (N,) or (B, N), case weights (B reweightings, e.g. bootstrap counts)

    Returns
    -------
    total, marked_total : float ndarrays (M,) or (B, M): weight of all cases and of the marked
    cases in each of the M blocks of tied scores, in descending score order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first case of each block
    w = np.asarray(weights, dtype=np.float64)[..., order]
    total = np.add.reduceat(w, starts, axis=-1)
    marked_total = np.add.reduceat(w * np.asarray(marked, dtype=np.float64)[order], starts, axis=-1)
    return total, marked_total


def auroc_from_tie_blocks(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """AUROC from per-block counts of tied scores, blocks in *descending* score order.

    Parameters
    ----------
    positives, negatives : float ndarray (..., M): positives and negatives (counts or weights)
        in each of M blocks of equal score, highest score first; leading axes are batch axes
        (e.g. B bootstrap reweightings).

    Returns
    -------
    float ndarray (...): the AUROC, NaN where either class has zero total.
    """
    positives = np.asarray(positives, dtype=np.float64)
    negatives = np.asarray(negatives, dtype=np.float64)
    n_pos, n_neg = positives.sum(axis=-1), negatives.sum(axis=-1)
    neg_below = n_neg[..., None] - np.cumsum(negatives, axis=-1)  # strictly lower score
    pairs = np.sum(positives * (neg_below + 0.5 * negatives), axis=-1)
    both = (n_pos > 0) & (n_neg > 0)
    return np.where(both, pairs / np.where(both, n_pos * n_neg, 1.0), np.nan)


def binary_auroc(scores: np.ndarray, positive: np.ndarray, *, sample_weight: np.ndarray | None = None) -> float:
    """ROC AUC of ``scores`` for separating positive from negative cases (higher = positive).

    Parameters
    ----------
    scores : float ndarray (N,), finite
    positive : bool or 0/1 ndarray (N,), True for the positive class
    sample_weight : non-negative float ndarray (N,) or None (all 1)

    Returns
    -------
    float in [0, 1], 0.5 for an uninformative score; NaN when either class is absent.
    Equals ``sklearn.metrics.roc_auc_score(positive, scores, sample_weight=sample_weight)``.
    """
    scores = np.asarray(scores)
    positive = np.asarray(positive)
    if scores.ndim != 1 or positive.shape != scores.shape:
        raise input_error(
            "scores and positive", f"shapes {scores.shape} and {positive.shape}", "two equal (N,) shapes", raw=True
        )
    if not np.all(np.isfinite(scores)):
        raise input_error("scores", "non-finite values", "finite numbers", raw=True)
    if positive.dtype != bool and not np.all((positive == 0) | (positive == 1)):
        raise input_error("positive", "values other than 0/1", "binary labels (True = positive)", raw=True)
    weight = np.ones(scores.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if weight.shape != scores.shape or np.any(weight < 0):
        raise input_error(
            "sample_weight", f"shape {weight.shape}", f"non-negative values of shape {scores.shape}", raw=True
        )
    if scores.size == 0:
        return float("nan")
    total, pos = tie_blocks(scores, positive, weight)
    return float(auroc_from_tie_blocks(pos, total - pos))


def macro_ovr_auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC of class scores ``probs (N, K)`` for integer ``labels (N,)``.

    For K = 2 this is the binary AUROC of ``probs[:, 1]`` (as scikit-learn computes it); for
    K > 2 the unweighted mean over classes k of the binary AUROC of ``probs[:, k]`` for
    ``labels == k`` (``roc_auc_score(labels, probs, multi_class="ovr", average="macro")``).

    Returns
    -------
    float; NaN when any of the K classes is absent from ``labels`` (its one-vs-rest AUROC is
    undefined, and a macro mean over the remaining classes would silently change meaning).
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2 or labels.shape != (probs.shape[0],):
        raise input_error(
            "probs and labels", f"shapes {probs.shape} and {labels.shape}", "(N, K) with K >= 2 and (N,)", raw=True
        )
    k = probs.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise input_error("labels", f"values in [{labels.min()}, {labels.max()}]", f"labels in [0, {k})", raw=True)
    if np.unique(labels).size < k:
        return float("nan")
    if k == 2:
        return binary_auroc(probs[:, 1], labels == 1)
    return float(np.mean([binary_auroc(probs[:, c], labels == c) for c in range(k)]))
