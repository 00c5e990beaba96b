"""Calibration metrics over a shard folder, one shard in memory at a time.

:func:`calibration_summary_streaming` gives the dict of
:func:`medsure.calibration.metrics.calibration_summary` on the predictive probabilities of a
prediction set too large to load whole (:mod:`medsure.shards`). The top-label metrics (ECE,
equal-mass ECE, MCE), the Brier score, the NLL and the accuracy keep a few numbers per case
(top-label confidence, correctness, the per-case Brier term and true-class probability); the
class-wise metrics (class-wise ECE, ACE: equal-mass bins per class need every ``p_k`` at once)
read the shards again for blocks of classes, keeping one ``(N,)`` column per class of the block
within ``max_bytes``. Every number is computed by the same functions on the same per-case values
as the in-memory path, so the results are the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medsure.artifact import Predictions
from medsure.calibration.metrics import NLL_CLIP, check_probs_labels
from medsure.core import binned_calibration
from medsure.shards import ShardSource, shards_of
from medsure.validation import check_int, input_error

__all__ = ["calibration_summary_streaming"]


def _probs_labels(part: Predictions) -> tuple[np.ndarray, np.ndarray]:
    if part.task != "classification":
        raise input_error("predictions", f"a {part.task} shard", "classification predictions", raw=True)
    if part.labels is None:
        raise input_error("predictions", "a shard without labels", "labelled predictions", raw=True)
    return check_probs_labels(part.probabilities(), part.labels)


def calibration_summary_streaming(source: ShardSource, *, n_bins: int = 15, max_bytes: int = 2**28) -> dict[str, Any]:
    """:func:`~medsure.calibration.metrics.calibration_summary` of a streamed prediction set.

    Parameters
    ----------
    source : shard folder, prediction file, or a function returning fresh iterables of parts
    n_bins : bins of every binned metric
    max_bytes : memory for the per-class columns of the class-wise metrics (float64, ``8 N``
        bytes per class); at least one class per pass

    Returns
    -------
    dict with ``ece``, ``ece_equal_mass``, ``mce``, ``ace``, ``classwise_ece``, ``brier``,
    ``nll``, ``accuracy`` (as the in-memory function) and ``n``, ``passes`` (reads of the set).
    """
    check_int("n_bins", n_bins, low=1)
    check_int("max_bytes", max_bytes, low=1)
    conf, correct, brier, p_true = [], [], [], []
    k = None
    for part in shards_of(source):
        probs, labels = _probs_labels(part)
        if k is None:
            k = probs.shape[1]
        elif probs.shape[1] != k:
            raise input_error("shard", f"K={probs.shape[1]} classes", f"K={k} like the first shard", raw=True)
        predicted = probs.argmax(axis=1)
        conf.append(probs.max(axis=1))
        correct.append(predicted == labels)
        onehot = (labels[:, None] == np.arange(k)[None, :]).astype(np.float64)
        brier.append(np.sum((probs - onehot) ** 2, axis=1))
        p_true.append(probs[np.arange(labels.shape[0]), labels])
    if k is None:
        raise input_error("predictions", "no shards", "at least one labelled case", raw=True)
    confidence, hit = np.concatenate(conf), np.concatenate(correct)
    n = confidence.size
    outcome = hit.astype(np.float64)
    top = binned_calibration(confidence, outcome, n_bins=n_bins)
    result: dict[str, Any] = {
        "ece": top.error("l1"),
        "ece_equal_mass": binned_calibration(confidence, outcome, n_bins=n_bins, strategy="quantile").error("l1"),
        "mce": top.error("max"),
    }
    del confidence, outcome
    classwise, ace = [], []
    per_pass = max(1, int(max_bytes) // (8 * n))
    passes = 1
    for first in range(0, k, per_pass):
        block = range(first, min(first + per_pass, k))
        columns: dict[int, list[np.ndarray]] = {c: [] for c in block}
        outcomes: dict[int, list[np.ndarray]] = {c: [] for c in block}
        for part in shards_of(source):
            probs, labels = _probs_labels(part)
            for c in block:
                columns[c].append(probs[:, c])
                outcomes[c].append(labels == c)
        passes += 1
        for c in block:
            p_c, y_c = np.concatenate(columns.pop(c)), np.concatenate(outcomes.pop(c))
            classwise.append(binned_calibration(p_c, y_c, n_bins=n_bins).error("l1"))
            ace.append(binned_calibration(p_c, y_c, n_bins=n_bins, strategy="quantile").error("bin_mean"))
    result.update(
        {
            "ace": float(np.mean(ace)),
            "classwise_ece": float(np.mean(classwise)),
            "brier": float(np.mean(np.concatenate(brier))),
            "nll": float(-np.mean(np.log(np.clip(np.concatenate(p_true), NLL_CLIP, 1.0)))),
            "accuracy": float(np.mean(hit)),
            "n": int(n),
            "passes": passes,
        }
    )
    return result
