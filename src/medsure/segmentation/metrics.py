"""Segmentation quality and uncertainty-quality metrics (pure functions, no I/O).

Empty structures (documented policy, used everywhere in medsure.segmentation)
-----------------------------------------------------------------------------
Dice, per image and label (:mod:`medsure.core.dice`, the one definition)
    GT and prediction both empty: undefined, NaN (nothing to segment, nothing predicted; it is
    excluded from means). GT empty but prediction not, or the reverse: 0. The summary number is
    :func:`medsure.core.mean_dice`, also the trainer's early-stopping metric.
HD95, per image and label
    Both empty: NaN (undefined). Exactly one empty: NaN as well, because a surface distance to
    nothing does not exist; :func:`hd95_per_label` reports these cases so summaries can count
    them (``n_undefined``) instead of silently averaging them away. Averages are over the
    images where both structures exist.
HD95 is computed by MONAI (``compute_hausdorff_distance(percentile=95)``) on one-hot maps; Dice
by :func:`medsure.core.dice_per_label`, pinned to MONAI ``compute_dice`` by the tests.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, TypedDict

import numpy as np
from scipy import stats

from medsure.core import calibration_error, check_label_maps, nanmean
from medsure.core import dice_per_label as core_dice_per_label
from medsure.validation import input_error, validate_params


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, H, W) int labels → (N, K, H, W) float32 one-hot."""
    labels = np.asarray(labels)
    return (labels[:, None] == np.arange(n_classes)[None, :, None, None]).astype(np.float32)


def dice_per_label(predicted: np.ndarray, masks: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice of every foreground label in every image (:func:`medsure.core.dice_per_label`).

    Parameters
    ----------
    predicted, masks : int ndarray (N, H, W)
    n_classes : K, background (label 0) included

    Returns
    -------
    float64 ndarray (N, K - 1); NaN where the label is absent from both maps (see module doc).
    """
    return core_dice_per_label(predicted, masks, n_classes)


def hd95_per_label(
    predicted: np.ndarray, masks: np.ndarray, n_classes: int, *, spacing: float | tuple[float, float] | None = None
) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance per image and foreground label (MONAI).

    Parameters
    ----------
    predicted, masks : int ndarray (N, H, W)
    n_classes : K, background included
    spacing : pixel size (isotropic float or (dy, dx)); None means distances in pixels

    Returns
    -------
    float64 ndarray (N, K - 1); NaN where either structure is empty (see module doc).
    """
    import torch
    from monai.metrics import compute_hausdorff_distance

    check_label_maps(predicted, masks, n_classes)
    n = np.shape(masks)[0]
    out = np.full((n, n_classes - 1), np.nan)
    pred_oh = one_hot(predicted, n_classes)
    gt_oh = one_hot(masks, n_classes)
    present = (pred_oh[:, 1:].sum(axis=(2, 3)) > 0) & (gt_oh[:, 1:].sum(axis=(2, 3)) > 0)
    rows = np.flatnonzero(present.any(axis=1))
    if rows.size == 0:
        return out
    with warnings.catch_warnings():
        # Per-label empty structures were handled above; MONAI would warn about them and about
        # its own deprecated internals, which tells the user nothing.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        dist = (
            compute_hausdorff_distance(
                torch.from_numpy(pred_oh[rows]),
                torch.from_numpy(gt_oh[rows]),
                include_background=False,
                percentile=95,
                spacing=spacing,
            )
            .double()
            .numpy()
        )
    out[rows] = np.where(present[rows], dist, np.nan)
    return out


def image_dice(dice: np.ndarray) -> np.ndarray:
    """Per-image Dice: mean over the foreground labels where Dice is defined.

    Parameters
    ----------
    dice : ndarray (N, K - 1) from :func:`dice_per_label`

    Returns
    -------
    ndarray (N,); NaN for images where no label is defined (empty GT and empty prediction).
    """
    return nanmean(np.asarray(dice, dtype=np.float64), axis=1)


def segment_calibration(probs: np.ndarray, masks: np.ndarray, *, n_bins: int = 10) -> dict[str, np.ndarray | float]:
    """Segment-level calibration: does a structure's mean confidence match its Dice?

    A *segment* is one foreground label in one image where the arg-max prediction is non-empty.
    Its confidence is the mean probability of that label over the pixels predicted as that label;
    its quality is its Dice with the ground truth. A calibrated segmenter has, among segments
    with mean confidence c, mean Dice c. The ECE-like gap bins segments by confidence into
    ``n_bins`` equal-width bins: ``sum_b (n_b / n) |mean Dice_b - mean conf_b|``.

    Parameters
    ----------
    probs : ndarray (N, K, H, W)
    masks : int ndarray (N, H, W)
    n_bins : number of confidence bins

    Returns
    -------
    dict with ``confidence`` and ``dice`` (S,) per segment, ``image`` and ``label`` (S,) indices
    (label counted from 1), ``ece`` (float, NaN when there is no segment), ``n_segments``.
    """
    probs = np.asarray(probs)
    k = probs.shape[1]
    predicted = probs.argmax(axis=1)
    dice = dice_per_label(predicted, masks, k)
    pred_oh = one_hot(predicted, k)[:, 1:]  # (N, K-1, H, W)
    area = pred_oh.sum(axis=(2, 3))
    conf_sum = (pred_oh * probs[:, 1:]).sum(axis=(2, 3))
    image, label = np.nonzero(area > 0)
    confidence = conf_sum[image, label] / area[image, label]
    seg_dice = dice[image, label]
    result: dict[str, np.ndarray | float] = {
        "confidence": confidence.astype(np.float64),
        "dice": seg_dice,
        "image": image,
        "label": label + 1,
        "n_segments": int(image.size),
    }
    if image.size == 0:
        result["ece"] = float("nan")
        return result
    # the classifier ECE's bins and rule (medsure.core.calibration_error), with Dice as the outcome
    result["ece"] = calibration_error(confidence.astype(np.float64), seg_dice, n_bins=n_bins)
    return result


class UEOCurve(TypedDict):
    """What :func:`uncertainty_error_overlap` returns."""

    thresholds: np.ndarray  # (M,)
    curve: np.ndarray  # (M,) UEO per threshold
    best: float
    best_threshold: float


def uncertainty_error_overlap(
    uncertainty: np.ndarray, error: np.ndarray, *, thresholds: np.ndarray | int = 100
) -> UEOCurve:
    """Uncertainty–error overlap (UEO; Jungo & Reyes, MICCAI 2019).

    ``UEO(t) = Dice({u > t}, {error})`` with all pixels of all images pooled, for every
    threshold t; the summary is the maximum over t and its threshold. (Jungo & Reyes average
    per-subject overlaps; pooling instead weights images by their error and uncertain pixel
    counts and gives one threshold for the whole set, which is what a user would deploy.) Computed with one sort
    and cumulative sums, so all thresholds cost about one pass over the pixels.

    Parameters
    ----------
    uncertainty : float ndarray, any shape (e.g. (N, H, W))
    error : bool ndarray, same shape (e.g. arg-max label != GT label)
    thresholds : ndarray of thresholds, or an int n for n evenly spaced thresholds from the
        minimum up to (excluding) the maximum uncertainty

    Returns
    -------
    dict with ``thresholds`` (M,), ``curve`` (M,) UEO per threshold, ``best`` (float),
    ``best_threshold`` (float). Where neither set has pixels the overlap is 1 (both empty agree).
    """
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    e = np.asarray(error).astype(bool).ravel()
    if u.shape != e.shape:
        raise input_error("error map", f"{e.size} values", f"one per uncertainty value ({u.size})", raw=True)
    if u.size == 0 or not np.all(np.isfinite(u)):
        raise input_error(
            "uncertainty map",
            "no values" if u.size == 0 else "NaN or infinite values",
            "a non-empty, finite map",
            raw=True,
        )
    if np.isscalar(thresholds) or np.ndim(thresholds) == 0:
        m = int(thresholds)
        if m < 1:
            raise input_error("thresholds", m, "at least 1")
        grid = np.linspace(u.min(), u.max(), m + 1)[:-1] if u.max() > u.min() else np.array([u.min()])
    else:
        grid = np.asarray(thresholds, dtype=np.float64).ravel()
    order = np.argsort(u, kind="stable")
    u_sorted = u[order]
    err_sorted = e[order]
    # Pixels with u > t are those at sorted positions >= searchsorted(u_sorted, t, 'right').
    first = np.searchsorted(u_sorted, grid, side="right")
    err_after = np.concatenate([np.cumsum(err_sorted[::-1])[::-1], [0]])
    n_uncertain = u.size - first
    n_overlap = err_after[first]
    n_error = int(e.sum())
    denom = n_uncertain + n_error
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(denom > 0, 2.0 * n_overlap / np.maximum(denom, 1), 1.0)
    best = int(np.argmax(curve))
    return {"thresholds": grid, "curve": curve, "best": float(curve[best]), "best_threshold": float(grid[best])}


def uncertainty_dice_association(image_uncertainty: np.ndarray, dice: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation between image-level uncertainty and per-image Dice.

    Images whose Dice is NaN (nothing to segment, nothing predicted) are dropped. Useful
    uncertainty gives a *negative* correlation (more uncertain → lower Dice).

    Returns
    -------
    dict with ``pearson``, ``spearman`` (NaN when fewer than 3 images or a constant input),
    ``n`` images used.
    """
    u, d = _paired_finite(image_uncertainty, dice)
    if u.size < 3 or np.ptp(u) == 0 or np.ptp(d) == 0:
        return {"pearson": float("nan"), "spearman": float("nan"), "n": int(u.size)}
    return {
        "pearson": float(stats.pearsonr(u, d).statistic),
        "spearman": float(stats.spearmanr(u, d).statistic),
        "n": int(u.size),
    }


class DicePredictor:
    """Predict per-image Dice from image-level uncertainty with a least-squares line.

    Fit on calibration images, then flag test images whose predicted Dice is low for review.
    Predictions are clipped to [0, 1]. The constructor takes no parameters.

    Attributes
    ----------
    slope_, intercept_ : float, set by :meth:`fit`
    n_fit_ : int, images used by :meth:`fit` (NaN Dice dropped)
    """

    _parameter_constraints: ClassVar[dict] = {}  # no constructor parameters (declared for the one estimator shape)

    def fit(self, image_uncertainty: np.ndarray, dice: np.ndarray) -> DicePredictor:
        """Least-squares line Dice ≈ intercept_ + slope_ · uncertainty on images with a defined Dice.

        Parameters
        ----------
        image_uncertainty, dice : ndarray (N,); NaN Dice (nothing to segment) is dropped
        """
        validate_params(self)
        u, d = _paired_finite(image_uncertainty, dice)
        if u.size < 2:
            raise input_error("DicePredictor.fit", f"{u.size} image(s) with a defined Dice", "at least 2", raw=True)
        if np.ptp(u) == 0:
            self.slope_, self.intercept_ = 0.0, float(d.mean())
        else:
            slope, intercept = np.polyfit(u, d, deg=1)
            self.slope_, self.intercept_ = float(slope), float(intercept)
        self.n_fit_ = int(u.size)
        return self

    def predict(self, image_uncertainty: np.ndarray) -> np.ndarray:
        """Predicted Dice (N,) in [0, 1]."""
        if not hasattr(self, "slope_"):
            raise input_error("DicePredictor", "an unfitted predictor", "a fitted one", "call fit first", raw=True)
        u = np.asarray(image_uncertainty, dtype=np.float64)
        return np.clip(self.intercept_ + self.slope_ * u, 0.0, 1.0)

    def score(self, image_uncertainty: np.ndarray, dice: np.ndarray) -> dict[str, float]:
        """MAE and Pearson correlation of predicted vs. actual Dice on new images (NaN Dice dropped)."""
        u, d = _paired_finite(image_uncertainty, dice)
        predicted = self.predict(u)
        corr = (
            float(stats.pearsonr(predicted, d).statistic)
            if u.size >= 3 and np.ptp(predicted) > 0 and np.ptp(d) > 0
            else float("nan")
        )
        return {
            "mae": float(np.mean(np.abs(predicted - d))) if u.size else float("nan"),
            "pearson": corr,
            "n": int(u.size),
        }


def _paired_finite(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise input_error("Dice values", b.size, f"one per uncertainty value ({a.size})")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]
