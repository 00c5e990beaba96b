"""Binned calibration error of a score against a binary outcome (pure numpy).

One binning serves the classifier ECE family (:mod:`medsure.calibration.metrics`) and the
pixel calibration of segmenters (:mod:`medsure.segmentation.calibration`).

Bins
    ``"uniform"``: equal-width edges ``0, 1/B, ..., 1``. ``"quantile"`` (equal mass): edges
    ``np.percentile(scores, [0, 100/B, ..., 100])`` (linear interpolation), the edges of
    scikit-learn's ``calibration_curve(strategy="quantile")``. For distinct scores each bin
    holds about ``n / B`` scores; tied scores always share a bin (the bin is a function of the
    score), so the value never depends on the order of the data. When many scores tie (millions
    of pixels at confidence 1.0) edges coincide and some bins stay empty, by design.
Assignment (both strategies)
    score ``s`` falls in bin ``b`` when ``e_b < s <= e_{b+1}``; the first bin also holds
    ``s <= e_1`` (scikit-learn's ``calibration_curve`` and torchmetrics' convention).
Error
    ``norm="l1"``: ``sum_b (n_b / n) |mean outcome_b - mean score_b|`` (ECE; Naeini et al. 2015,
    Guo et al. 2017); ``norm="max"``: ``max_b`` of the gap over non-empty bins (MCE);
    ``norm="bin_mean"``: the unweighted mean of the gap over non-empty bins (the per-class term
    of the adaptive calibration error, Nixon et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from medsure.validation import input_error

__all__ = ["BinStrategy", "BinnedCalibration", "bin_edges", "binned_calibration", "calibration_error"]

BinStrategy = Literal["uniform", "quantile"]
Norm = Literal["l1", "max", "bin_mean"]


@dataclass(frozen=True)
class BinnedCalibration:
    """Per-bin statistics of a score against a binary outcome.

    Attributes
    ----------
    edges : ndarray (B + 1,), see the module docstring
    count : int ndarray (B,), number of samples per bin
    mean_score : ndarray (B,), mean score per bin (0 for empty bins, see ``count``)
    mean_outcome : ndarray (B,), observed frequency per bin (0 for empty bins)
    """

    edges: np.ndarray
    count: np.ndarray
    mean_score: np.ndarray
    mean_outcome: np.ndarray

    @property
    def nonempty(self) -> np.ndarray:
        return self.count > 0

    @property
    def gaps(self) -> np.ndarray:
        """``|mean_outcome - mean_score|`` per bin (0 for empty bins)."""
        return np.abs(self.mean_outcome - self.mean_score)

    def error(self, norm: Norm = "l1") -> float:
        """Calibration error of these bins (``norm`` as in the module docstring); NaN when empty."""
        filled = self.nonempty
        if not filled.any():
            return float("nan")
        if norm == "l1":
            return float(np.sum(self.count * self.gaps) / self.count.sum())
        if norm == "max":
            return float(self.gaps[filled].max())
        if norm == "bin_mean":
            return float(self.gaps[filled].mean())
        raise input_error("norm", norm, "'l1', 'max' or 'bin_mean'")


def _check_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise input_error("n_bins", n_bins, "a positive integer")


def bin_edges(scores: np.ndarray, n_bins: int, strategy: BinStrategy = "uniform") -> np.ndarray:
    """Bin edges ``(n_bins + 1,)`` for ``scores (n,)`` (see the module docstring)."""
    _check_bins(n_bins)
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy != "quantile":
        raise input_error("strategy", strategy, "'uniform' or 'quantile'")
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        return np.linspace(0.0, 1.0, n_bins + 1)
    return np.percentile(scores, np.linspace(0.0, 100.0, n_bins + 1))


def binned_calibration(
    scores: np.ndarray, outcomes: np.ndarray, *, n_bins: int = 15, strategy: BinStrategy = "uniform"
) -> BinnedCalibration:
    """Bin ``scores`` in [0, 1] and average the binary ``outcomes`` per bin.

    Parameters
    ----------
    scores : float ndarray (n,), e.g. top-label confidences
    outcomes : bool or 0/1 ndarray (n,), e.g. whether the prediction was correct
    n_bins : B
    strategy : ``"uniform"`` (equal width) or ``"quantile"`` (equal mass)

    Returns
    -------
    BinnedCalibration with B bins.
    """
    _check_bins(n_bins)
    scores = np.asarray(scores, dtype=np.float64)
    outcomes = np.asarray(outcomes, dtype=np.float64)
    if scores.ndim != 1 or outcomes.shape != scores.shape:
        raise input_error(
            "scores and outcomes", f"shapes {scores.shape} and {outcomes.shape}", "two equal (N,) shapes", raw=True
        )
    edges = bin_edges(scores, n_bins, strategy)
    index = np.searchsorted(edges[1:-1], scores, side="left")  # e_b < s <= e_{b+1}
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    score_sum = np.bincount(index, weights=scores, minlength=n_bins)
    outcome_sum = np.bincount(index, weights=outcomes, minlength=n_bins)
    safe = np.maximum(count, 1)
    return BinnedCalibration(edges=edges, count=count, mean_score=score_sum / safe, mean_outcome=outcome_sum / safe)


def calibration_error(
    scores: np.ndarray, outcomes: np.ndarray, *, n_bins: int = 15, strategy: BinStrategy = "uniform", norm: Norm = "l1"
) -> float:
    """Binned calibration error of ``scores (n,)`` against binary ``outcomes (n,)``.

    ``norm="l1"`` with uniform bins is the ECE (equals torchmetrics ``binary_calibration_error``
    on the same scores, and ``multiclass_calibration_error`` on top-label confidences);
    ``norm="max"`` the MCE. NaN when there are no scores.
    """
    return binned_calibration(scores, outcomes, n_bins=n_bins, strategy=strategy).error(norm)
