"""Conformal masks: conformal risk control of the per-image false-negative rate.

Angelopoulos, Bates, Fisch, Lei & Schuster, "Conformal Risk Control" (ICLR 2024; arXiv 2022).

For a foreground label k, the conformal mask at threshold λ is ``{pixels: p_k >= λ}``. Its loss
on an image is the false-negative rate ``FNR_i(λ) = |GT_i ∖ mask_i(λ)| / |GT_i|``, which is
bounded by B = 1 and non-decreasing in λ. On n calibration images we pick

    λ̂ = sup{ λ : n/(n+1) · R̂_n(λ) + B/(n+1) <= α },    R̂_n(λ) = mean_i FNR_i(λ),

and then, for a new exchangeable image, ``E[FNR_{n+1}(λ̂)] <= α`` (the expectation is over the
calibration set and the new image). The sup is computed exactly from the sorted GT-pixel
probabilities, not on a grid. When even λ = 0 (every pixel in the mask, FNR = 0) is needed,
i.e. α < 1/(n+1), λ̂ = 0.

Images with an empty ground truth (policy ``empty_gt``)
    ``"zero"`` (default): FNR = 0 there (no positive pixel can be missed); the image still counts
    in n, and the guarantee is on the FNR averaged over all images.
    ``"exclude"``: such images are dropped from calibration and evaluation; the guarantee is
    then conditional on the structure being present (still exchangeable).

Multi-label maps (e.g. JSRT lungs and heart) get one λ per foreground label, each controlling
that label's FNR at α; the label masks may overlap.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from medsure.artifact import Predictions
from medsure.errors import MedsureInputError

EmptyPolicy = Literal["zero", "exclude"]


def crc_threshold(probs: np.ndarray, gt: np.ndarray, alpha: float, *,
                  empty_gt: EmptyPolicy = "zero") -> float:
    """Exact conformal-risk-control threshold λ̂ for the FNR of one binary structure.

    Parameters
    ----------
    probs : float ndarray (N, H, W), probability of the structure per pixel
    gt : bool ndarray (N, H, W), ground-truth structure
    alpha : target expected FNR, in (0, 1)
    empty_gt : ``"zero"`` or ``"exclude"`` (see module docstring)

    Returns
    -------
    float λ̂; the mask is ``probs >= λ̂``. When the risk bound holds even with an empty mask
    (possible only with many empty-GT images), λ̂ is the smallest float above the largest
    calibration probability.
    """
    probs = np.asarray(probs, dtype=np.float64)
    gt = np.asarray(gt, dtype=bool)
    _check_binary(probs, gt, alpha)
    gt_count = gt.reshape(gt.shape[0], -1).sum(axis=1)
    if empty_gt == "exclude":
        keep = gt_count > 0
        probs, gt, gt_count = probs[keep], gt[keep], gt_count[keep]
    elif empty_gt != "zero":
        raise MedsureInputError(f"empty_gt={empty_gt!r}, expected 'zero' or 'exclude'")
    n = int(gt.shape[0])
    if n == 0:
        raise MedsureInputError("conformal mask calibration needs at least one calibration image "
                                "(with a non-empty ground truth when empty_gt='exclude')")
    # R̂(λ) <= target  ⇔  n/(n+1) R̂ + 1/(n+1) <= α  (B = 1).
    target = ((n + 1) * alpha - 1.0) / n
    if target < -1e-12:  # alpha < 1/(n+1): only the whole image is safe
        return 0.0
    target = max(target, 0.0)  # alpha = 1/(n+1) up to rounding
    # Every GT pixel j of image i weighs 1 / (n |GT_i|); R̂(λ) = total weight of GT pixels with p < λ.
    image_index, _, _ = np.nonzero(gt)
    values = probs[gt]
    weights = 1.0 / (n * gt_count[image_index])
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    unique, start = np.unique(values, return_index=True)
    cumulative = np.cumsum(np.add.reduceat(weights, start)) if values.size else np.array([])
    # λ in (unique[i], unique[i+1]] has risk cumulative[i]; the largest feasible λ is the first
    # value whose inclusion in "missed" would push the risk above the target.
    over = np.flatnonzero(cumulative > target + 1e-12)
    if over.size == 0:
        return float(np.nextafter(probs.max(), np.inf)) if probs.size else 1.0
    return float(unique[over[0]])


def fnr(probs: np.ndarray, gt: np.ndarray, threshold: float) -> np.ndarray:
    """Per-image false-negative rate of the mask ``probs >= threshold``.

    Parameters
    ----------
    probs : float ndarray (N, H, W)
    gt : bool ndarray (N, H, W)
    threshold : λ

    Returns
    -------
    float64 ndarray (N,); 0 for images with an empty ground truth.
    """
    probs = np.asarray(probs)
    gt = np.asarray(gt, dtype=bool)
    if probs.shape != gt.shape:
        raise MedsureInputError(f"probabilities shape {probs.shape} differs from ground truth {gt.shape}")
    n = gt.shape[0]
    gt_count = gt.reshape(n, -1).sum(axis=1)
    missed = (gt & (probs < threshold)).reshape(n, -1).sum(axis=1)
    return missed / np.maximum(gt_count, 1)


def fnr_curve(probs: np.ndarray, gt: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per-image FNR for many thresholds at once (brute force, for checks and plots).

    Returns
    -------
    ndarray (N, M) for M thresholds.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64).ravel()
    gt = np.asarray(gt, dtype=bool)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != gt.shape or probs.ndim != 3:
        raise MedsureInputError(f"probabilities shape {probs.shape} and ground truth {gt.shape} must match (N, H, W)")
    n = gt.shape[0]
    gt_count = gt.reshape(n, -1).sum(axis=1)
    image_index = np.nonzero(gt)[0]
    # Shift image i's GT probabilities (in [0, 1]) to [3i, 3i + 1] so one sorted array serves all
    # images; thresholds are clipped to [-1, 2], which gives the same counts as the originals.
    offset = 3.0
    keyed = np.sort(probs[gt] + offset * image_index)
    clipped = np.clip(thresholds, -1.0, 2.0)
    below = np.searchsorted(keyed, clipped[None, :] + offset * np.arange(n)[:, None], side="left")
    starts = np.concatenate([[0], np.cumsum(gt_count)[:-1]])
    return (below - starts[:, None]) / np.maximum(gt_count, 1)[:, None]


def _check_binary(probs: np.ndarray, gt: np.ndarray, alpha: float) -> None:
    if probs.shape != gt.shape or probs.ndim != 3:
        raise MedsureInputError(
            f"probabilities shape {probs.shape} and ground truth shape {gt.shape} must be equal and (N, H, W)")
    if not (0.0 < float(alpha) < 1.0):
        raise MedsureInputError(f"alpha={alpha!r}, expected a number in (0, 1)")
    if probs.size and (not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1):
        raise MedsureInputError("probabilities must be finite and in [0, 1]")


class ConformalMask:
    """Conformal risk control of the per-image FNR, one threshold per foreground label.

    Parameters
    ----------
    alpha : float in (0, 1), target expected FNR
    empty_gt : ``"zero"`` (default) or ``"exclude"``; see the module docstring

    Attributes
    ----------
    lambda_ : ndarray (K - 1,), threshold per foreground label (mask = p_k >= lambda_k)
    n_cal_ : ndarray (K - 1,) of int, calibration images used per label
    class_names_ : ndarray (K - 1,) of str, foreground label names
    """

    def __init__(self, alpha: float = 0.1, *, empty_gt: EmptyPolicy = "zero") -> None:
        self.alpha = alpha
        self.empty_gt = empty_gt

    def calibrate(self, cal: Predictions) -> "ConformalMask":
        """Choose one λ per foreground label on the labelled calibration predictions."""
        probs, masks = _probs_and_masks(cal, "calibration")
        k = probs.shape[1]
        self.lambda_ = np.array([
            crc_threshold(probs[:, j], masks == j, self.alpha, empty_gt=self.empty_gt) for j in range(1, k)])
        present = np.stack([(masks == j).reshape(masks.shape[0], -1).any(axis=1) for j in range(1, k)])
        self.n_cal_ = (present.sum(axis=1) if self.empty_gt == "exclude"
                       else np.full(k - 1, masks.shape[0])).astype(np.int64)
        self.class_names_ = np.asarray(cal.class_names[1:]).astype(str)
        return self

    def predict(self, pred: Predictions) -> np.ndarray:
        """Conformal masks, bool ndarray (N, K - 1, H, W): pixel in mask k when p_k >= lambda_k."""
        self._check_fitted()
        probs = pred.probabilities()
        if probs.shape[1] - 1 != self.lambda_.size:
            raise MedsureInputError(
                f"predictions have K={probs.shape[1]} labels but the mask was calibrated for "
                f"K={self.lambda_.size + 1}")
        return probs[:, 1:] >= self.lambda_[None, :, None, None]

    def fnr(self, pred: Predictions) -> np.ndarray:
        """Per-image FNR per foreground label, ndarray (N, K - 1); 0 where the GT is empty."""
        self._check_fitted()
        probs, masks = _probs_and_masks(pred, "test")
        if probs.shape[1] - 1 != self.lambda_.size:
            raise MedsureInputError(
                f"predictions have K={probs.shape[1]} labels but the mask was calibrated for "
                f"K={self.lambda_.size + 1}")
        return np.stack([fnr(probs[:, j], masks == j, self.lambda_[j - 1])
                         for j in range(1, probs.shape[1])], axis=1)

    def _check_fitted(self) -> None:
        if not hasattr(self, "lambda_"):
            raise MedsureInputError("ConformalMask used before calibrate()")


def _probs_and_masks(pred: Predictions, role: str) -> tuple[np.ndarray, np.ndarray]:
    if pred.task != "segmentation":
        raise MedsureInputError(f"{role} predictions: expected a segmentation artifact, got {pred.task!r}")
    if pred.masks is None:
        raise MedsureInputError(f"{role} predictions have no 'masks'; conformal masks need ground truth")
    return pred.probabilities(), pred.masks
