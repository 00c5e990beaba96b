"""Pixel-level calibration of segmentation probabilities (pure functions, no I/O).

Top-label calibration: each pixel's confidence is its maximum class probability and it is
correct when the arg-max label equals the ground-truth label.

ECE
    ``sum_b (n_b / n) |acc_b - conf_b|`` over ``n_bins`` equal-width confidence bins
    ``[0, 1/B], (1/B, 2/B], ..., ((B-1)/B, 1]`` (Naeini et al. 2015, Guo et al. 2017), the
    same bins as the classifier ECE of :mod:`medsure.calibration.metrics`.
ACE
    The same sum over equal-mass bins (each holds ``n / B`` pixels after sorting by
    confidence; Nixon et al. 2019 use equal-mass bins, here on the top label only).
MCE
    ``max_b |acc_b - conf_b|`` over non-empty equal-width bins.

``region`` restricts every statistic to a pixel subset, e.g. the boundary band of
:func:`medsure.segmentation.regions.boundary_band`.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from medsure.calibration.metrics import binned_calibration
from medsure.errors import MedsureInputError

BinStrategy = Literal["uniform", "quantile"]


def pixel_confidence(probs: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and correctness per pixel.

    Parameters
    ----------
    probs : ndarray (N, K, H, W)
    masks : int ndarray (N, H, W)

    Returns
    -------
    confidence : float32 ndarray (N, H, W), max over K
    correct : bool ndarray (N, H, W), arg-max == mask
    """
    probs = np.asarray(probs)
    masks = np.asarray(masks)
    if probs.ndim != 4 or masks.shape != (probs.shape[0], *probs.shape[2:]):
        raise MedsureInputError(
            f"probabilities shape {probs.shape} and masks shape {masks.shape} do not match; "
            "expected (N, K, H, W) and (N, H, W)")
    return probs.max(axis=1).astype(np.float32), probs.argmax(axis=1) == masks


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15,
                     strategy: BinStrategy = "uniform") -> dict[str, np.ndarray]:
    """Reliability-diagram statistics.

    Parameters
    ----------
    confidence : float ndarray, any shape, values in [0, 1]
    correct : bool ndarray, same shape
    n_bins : number of bins B
    strategy : ``"uniform"`` (equal width) or ``"quantile"`` (equal mass)

    Returns
    -------
    dict of ndarrays of length B: ``count``, ``confidence`` (mean in the bin, NaN if empty),
    ``accuracy`` (NaN if empty); plus ``edges`` (B + 1,) for uniform bins.
    """
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hit = np.asarray(correct).ravel().astype(np.float64)
    if conf.shape != hit.shape:
        raise MedsureInputError(f"confidence has {conf.size} values but correct has {hit.size}")
    if n_bins < 1:
        raise MedsureInputError(f"n_bins={n_bins}, expected at least 1")
    if conf.size and (not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1):
        raise MedsureInputError("confidence values must be finite and in [0, 1]")
    if strategy == "uniform":
        # the classifier ECE's bins, so pixel and image ECE share one convention: (lo, hi]
        bins = binned_calibration(conf, hit, n_bins=n_bins, strategy="uniform")
        filled = bins.count > 0
        return {"count": bins.count, "confidence": np.where(filled, bins.mean_score, np.nan),
                "accuracy": np.where(filled, bins.mean_outcome, np.nan), "edges": bins.edges}
    if strategy == "quantile":
        # Rank-based equal-mass bins (bin sizes differ by at most one pixel), not percentile
        # edges: millions of pixels tie at confidence 1.0, which collapses percentile bins.
        order = np.argsort(conf, kind="stable")
        index = np.empty(conf.size, dtype=np.int64)
        index[order] = (np.arange(conf.size) * n_bins) // max(conf.size, 1)
        edges = np.array([])
    else:
        raise MedsureInputError(f"strategy={strategy!r}, expected 'uniform' or 'quantile'")
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=hit, minlength=n_bins) / count
    return {"count": count, "confidence": mean_conf, "accuracy": accuracy, "edges": edges}


def calibration_errors(confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15) -> dict[str, float]:
    """ECE, ACE and MCE (see module docstring) of the given pixels.

    Returns
    -------
    dict with ``ece``, ``ace``, ``mce`` (NaN when there are no pixels) and ``n`` pixels.
    """
    uniform = calibration_bins(confidence, correct, n_bins=n_bins, strategy="uniform")
    quantile = calibration_bins(confidence, correct, n_bins=n_bins, strategy="quantile")
    n = int(uniform["count"].sum())
    if n == 0:
        return {"ece": float("nan"), "ace": float("nan"), "mce": float("nan"), "n": 0}

    def weighted_gap(bins: dict[str, np.ndarray]) -> float:
        filled = bins["count"] > 0
        gap = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
        return float(np.sum(bins["count"][filled] * gap) / n)

    filled = uniform["count"] > 0
    mce = float(np.max(np.abs(uniform["accuracy"][filled] - uniform["confidence"][filled])))
    return {"ece": weighted_gap(uniform), "ace": weighted_gap(quantile), "mce": mce, "n": n}


def pixel_calibration(probs: np.ndarray, masks: np.ndarray, *, region: np.ndarray | None = None,
                      n_bins: int = 15) -> dict[str, float]:
    """Top-label ECE / ACE / MCE over all pixels, or over the pixels in ``region``.

    Parameters
    ----------
    probs : ndarray (N, K, H, W)
    masks : int ndarray (N, H, W)
    region : bool ndarray (N, H, W) or None (all pixels)
    n_bins : number of bins

    Returns
    -------
    dict with ``ece``, ``ace``, ``mce``, ``n`` (pixels used).
    """
    confidence, correct = pixel_confidence(probs, masks)
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != confidence.shape:
            raise MedsureInputError(f"region shape {region.shape}, expected {confidence.shape}")
        confidence, correct = confidence[region], correct[region]
    return calibration_errors(confidence, correct, n_bins=n_bins)
