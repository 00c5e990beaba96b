"""Pixel-level calibration of segmentation probabilities (pure functions, no I/O).

Top-label calibration: each pixel's confidence is its maximum class probability and it is
correct when the arg-max label equals the ground-truth label. Bins, bin assignment and errors
are those of :mod:`medsure.core.calibration`, shared with the classifier metrics of
:mod:`medsure.calibration.metrics`, so a key means the same thing for images and pixels.

``ece``
    ``sum_b (n_b / n) |acc_b - conf_b|`` over ``n_bins`` equal-width confidence bins
    ``[0, 1/B], (1/B, 2/B], ..., ((B-1)/B, 1]`` (Naeini et al. 2015, Guo et al. 2017).
``ece_equal_mass``
    The same sum over equal-mass bins (each holds about ``n / B`` pixels; tied confidences share
    a bin). Earlier releases called this ``ace``; ``ace`` now only names the class-wise adaptive
    calibration error of Nixon et al. (2019) in :mod:`medsure.calibration.metrics`.
``mce``
    ``max_b |acc_b - conf_b|`` over non-empty equal-width bins.

``region`` restricts every statistic to a pixel subset, e.g. the boundary band of
:func:`medsure.segmentation.regions.boundary_band`.
"""

from __future__ import annotations

import numpy as np

from medsure.core import BinStrategy, binned_calibration
from medsure.validation import input_error


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
        raise input_error(
            "probabilities and masks", f"shapes {probs.shape} and {masks.shape}", "(N, K, H, W) and (N, H, W)", raw=True
        )
    return probs.max(axis=1).astype(np.float32), probs.argmax(axis=1) == masks


def _pixels(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 confidences in [0, 1] and 0/1 outcomes, checked."""
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hit = np.asarray(correct).ravel().astype(np.float64)
    if conf.shape != hit.shape:
        raise input_error("correct", f"{hit.size} values", f"one per confidence value ({conf.size})", raw=True)
    if conf.size and (not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1):
        raise input_error("confidence", "values outside [0, 1] or not finite", "finite values in [0, 1]", raw=True)
    return conf, hit


def calibration_bins(
    confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15, strategy: BinStrategy = "uniform"
) -> dict[str, np.ndarray]:
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
    ``accuracy`` (NaN if empty); plus ``edges`` (B + 1,) (see :mod:`medsure.core.calibration`).
    """
    bins = binned_calibration(*_pixels(confidence, correct), n_bins=n_bins, strategy=strategy)
    filled = bins.count > 0
    return {
        "count": bins.count,
        "confidence": np.where(filled, bins.mean_score, np.nan),
        "accuracy": np.where(filled, bins.mean_outcome, np.nan),
        "edges": bins.edges,
    }


def calibration_errors(confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15) -> dict[str, float]:
    """``ece``, ``ece_equal_mass`` and ``mce`` (see module docstring) of the given pixels.

    Returns
    -------
    dict with ``ece``, ``ece_equal_mass``, ``mce`` (NaN when there are no pixels) and ``n`` pixels.
    """
    conf, hit = _pixels(confidence, correct)
    uniform = binned_calibration(conf, hit, n_bins=n_bins, strategy="uniform")
    equal_mass = binned_calibration(conf, hit, n_bins=n_bins, strategy="quantile")
    return {
        "ece": uniform.error("l1"),
        "ece_equal_mass": equal_mass.error("l1"),
        "mce": uniform.error("max"),
        "n": int(conf.size),
    }


def pixel_calibration(
    probs: np.ndarray, masks: np.ndarray, *, region: np.ndarray | None = None, n_bins: int = 15
) -> dict[str, float]:
    """Top-label ``ece`` / ``ece_equal_mass`` / ``mce`` over all pixels, or over the pixels in ``region``.

    Parameters
    ----------
    probs : ndarray (N, K, H, W)
    masks : int ndarray (N, H, W)
    region : bool ndarray (N, H, W) or None (all pixels)
    n_bins : number of bins

    Returns
    -------
    dict with ``ece``, ``ece_equal_mass``, ``mce``, ``n`` (pixels used).
    """
    confidence, correct = pixel_confidence(probs, masks)
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != confidence.shape:
            raise input_error("region", f"shape {region.shape}", f"{confidence.shape}", raw=True)
        confidence, correct = confidence[region], correct[region]
    return calibration_errors(confidence, correct, n_bins=n_bins)
