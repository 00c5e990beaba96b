"""Calibration metrics as pure numpy functions.

Every function takes predictive probabilities ``probs`` of shape ``(N, K)`` (rows summing to 1)
and integer ``labels`` of shape ``(N,)``; none modifies its inputs.

Bins are those of :mod:`medsure.core.calibration` (shared with the pixel calibration of
segmenters): a score ``s`` falls in bin ``b`` when ``edges[b] < s <= edges[b + 1]`` (the first
bin also holds ``s <= edges[1]``), as in scikit-learn's ``calibration_curve``.
``strategy="uniform"`` gives equal-width bins on [0, 1]; ``strategy="quantile"`` gives
equal-mass bins whose edges are the inverted-CDF empirical quantiles of the scores (tied
scores share a bin).

Names: ``ece`` is the equal-width top-label ECE, ``ece_equal_mass`` the same sum over
equal-mass bins, ``ace`` only ever the class-wise adaptive calibration error of Nixon et al.
(2019) (:func:`adaptive_calibration_error`).
"""

from __future__ import annotations

import numpy as np

from medsure.core import BinnedCalibration, binned_calibration
from medsure.core import BinStrategy as Strategy
from medsure.validation import input_error

__all__ = [
    "BinnedCalibration",
    "binned_calibration",
    "reliability_diagram",
    "expected_calibration_error",
    "maximum_calibration_error",
    "adaptive_calibration_error",
    "classwise_ece",
    "brier_score",
    "negative_log_likelihood",
    "calibration_summary",
    "check_probs_labels",
    "NLL_CLIP",
]


def check_probs_labels(probs: np.ndarray, labels: np.ndarray, *, atol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``probs (N, K)`` and ``labels (N,)``; return them as float64 / int64 arrays."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise input_error("probs", f"shape {probs.shape}", "(N, K) with K >= 2", raw=True)
    if probs.shape[0] == 0:
        raise input_error("probs", "0 samples", "at least one", raw=True)
    if not np.issubdtype(probs.dtype, np.floating) or not np.all(np.isfinite(probs)):
        raise input_error(
            "probs", f"dtype {probs.dtype}, with NaN/inf or not floats", "finite floating-point probabilities", raw=True
        )
    if probs.min() < -atol or probs.max() > 1 + atol:
        raise input_error("probs", f"values in [{probs.min():.4g}, {probs.max():.4g}]", "values in [0, 1]", raw=True)
    row_sums = probs.sum(axis=1)
    if np.max(np.abs(row_sums - 1.0)) > atol:
        raise input_error(
            "probs",
            f"rows summing to values in [{row_sums.min():.4g}, {row_sums.max():.4g}]",
            "rows that sum to 1",
            "pass softmax probabilities, not logits",
            raw=True,
        )
    if labels.shape != (probs.shape[0],):
        raise input_error("labels", f"shape {labels.shape}", f"({probs.shape[0]},) to match probs", raw=True)
    if not np.issubdtype(labels.dtype, np.integer):
        raise input_error("labels", f"dtype {labels.dtype}", "integers", raw=True)
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise input_error(
            "labels", f"labels in [{labels.min()}, {labels.max()}]", f"labels in [0, {probs.shape[1]})", raw=True
        )
    return probs.astype(np.float64, copy=False), labels.astype(np.int64, copy=False)


def _top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predicted = probs.argmax(axis=1)
    return probs.max(axis=1), (predicted == labels).astype(np.float64)


def reliability_diagram(
    probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15, strategy: Strategy = "uniform"
) -> BinnedCalibration:
    """Reliability-diagram data for the top-label confidence: per bin, mean confidence vs accuracy."""
    probs, labels = check_probs_labels(probs, labels)
    return binned_calibration(*_top_label(probs, labels), n_bins=n_bins, strategy=strategy)


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15, strategy: Strategy = "uniform"
) -> float:
    """Top-label ECE: ``sum_b (n_b / N) |acc_b - conf_b|``.

    ``strategy="uniform"`` is the equal-width ECE of Guo et al. (2017); ``"quantile"`` the
    equal-mass (adaptive-binning) variant.
    """
    return reliability_diagram(probs, labels, n_bins=n_bins, strategy=strategy).error("l1")


def maximum_calibration_error(
    probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15, strategy: Strategy = "uniform"
) -> float:
    """Top-label MCE: the largest ``|acc_b - conf_b|`` over non-empty bins."""
    return reliability_diagram(probs, labels, n_bins=n_bins, strategy=strategy).error("max")


def _per_class_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int, strategy: Strategy) -> list[BinnedCalibration]:
    onehot = labels[:, None] == np.arange(probs.shape[1])[None, :]
    return [
        binned_calibration(probs[:, k], onehot[:, k], n_bins=n_bins, strategy=strategy) for k in range(probs.shape[1])
    ]


def classwise_ece(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15, strategy: Strategy = "uniform") -> float:
    """Class-wise ECE (Kull et al. 2019): the mean over classes k of the ECE of ``p_k`` against
    ``1[y = k]``, each with ``n_bins`` equal-width bins."""
    probs, labels = check_probs_labels(probs, labels)
    per_class = [b.error("l1") for b in _per_class_bins(probs, labels, n_bins, strategy)]
    return float(np.mean(per_class))


def adaptive_calibration_error(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """ACE (Nixon et al. 2019): class-wise calibration error with equal-mass bins, averaged
    uniformly over classes and bins: ``1/(K R) sum_k sum_r |acc(r, k) - conf(r, k)|``."""
    probs, labels = check_probs_labels(probs, labels)
    gaps = [b.error("bin_mean") for b in _per_class_bins(probs, labels, n_bins, "quantile")]
    return float(np.mean(gaps))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score ``mean_i sum_k (p_ik - 1[y_i = k])^2`` (Brier 1950), in [0, 2].

    For two classes this is twice scikit-learn's binary ``brier_score_loss``.
    """
    probs, labels = check_probs_labels(probs, labels)
    onehot = (labels[:, None] == np.arange(probs.shape[1])[None, :]).astype(np.float64)
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


#: probability clip of :func:`negative_log_likelihood`: ``p`` is raised to at least this value,
#: so one confident miss costs at most ``-log(1e-15)`` = 34.5 nats. The value is scikit-learn's
#: historical ``log_loss`` clip (sklearn >= 1.5 clips at the float64 machine epsilon instead,
#: which only matters for probabilities below 2.2e-16). Outputs name it as ``nll_clip``.
NLL_CLIP = 1e-15


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray, *, eps: float = NLL_CLIP) -> float:
    """Mean ``-log p_{i, y_i}``; probabilities are clipped to ``[eps, 1]`` (default
    :data:`NLL_CLIP`) so a confident miss costs ``-log(eps)`` (about 34.5) instead of infinity."""
    probs, labels = check_probs_labels(probs, labels)
    p_true = np.clip(probs[np.arange(labels.shape[0]), labels], eps, 1.0)
    return float(-np.mean(np.log(p_true)))


def calibration_summary(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> dict[str, float]:
    """All calibration metrics at once: ``ece`` (equal width), ``ece_equal_mass``, ``mce``,
    ``ace``, ``classwise_ece``, ``brier``, ``nll`` and ``accuracy``."""
    probs, labels = check_probs_labels(probs, labels)
    return {
        "ece": expected_calibration_error(probs, labels, n_bins=n_bins),
        "ece_equal_mass": expected_calibration_error(probs, labels, n_bins=n_bins, strategy="quantile"),
        "mce": maximum_calibration_error(probs, labels, n_bins=n_bins),
        "ace": adaptive_calibration_error(probs, labels, n_bins=n_bins),
        "classwise_ece": classwise_ece(probs, labels, n_bins=n_bins),
        "brier": brier_score(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
        "accuracy": float(np.mean(probs.argmax(axis=1) == labels)),
    }
