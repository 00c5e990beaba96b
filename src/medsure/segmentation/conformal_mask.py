"""Conformal masks: conformal risk control of the per-image false-negative rate.

Angelopoulos, Bates, Fisch, Lei & Schuster, "Conformal Risk Control" (ICLR 2024; arXiv 2022).

:class:`ConformalMask` (``fit`` on cal, ``predict`` masks, ``fnr`` per image) is the estimator;
:func:`evaluate_conformal_mask` is the analysis behind ``medsure conformal-mask`` and the report.

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

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from medsure.artifact import Predictions, check_compatible
from medsure.validation import Interval, Options, check_alpha, check_choice, input_error, validate_params

EmptyPolicy = Literal["zero", "exclude"]


def crc_threshold(probs: np.ndarray, gt: np.ndarray, alpha: float, *, empty_gt: EmptyPolicy = "zero") -> float:
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
    else:
        check_choice("empty_gt", empty_gt, ("zero", "exclude"))
    n = int(gt.shape[0])
    image_index, _, _ = np.nonzero(gt)
    max_prob = float(probs.max()) if probs.size else float("nan")
    return crc_threshold_from_pixels(probs[gt], gt_count[image_index], n, alpha, max_prob)


def crc_threshold_from_pixels(values: np.ndarray, gt_count: np.ndarray, n: int, alpha: float, max_prob: float) -> float:
    """:func:`crc_threshold` from the ground-truth pixels alone (what a stream keeps; the in-memory path
    calls it too).

    Parameters
    ----------
    values : float64 (P,), the probabilities of the ground-truth pixels, in image-then-pixel order
    gt_count : int (P,), the ground-truth size of each pixel's image
    n : calibration images (after the empty-GT policy)
    alpha : target expected FNR
    max_prob : the largest probability of the calibration images (for an empty mask)
    """
    if n == 0:
        raise input_error(
            "calibration images",
            "none",
            "at least one image (with a non-empty ground truth when empty_gt='exclude')",
            raw=True,
        )
    # R̂(λ) <= target  ⇔  n/(n+1) R̂ + 1/(n+1) <= α  (B = 1).
    target = ((n + 1) * alpha - 1.0) / n
    if target < -1e-12:  # alpha < 1/(n+1): only the whole image is safe
        return 0.0
    target = max(target, 0.0)  # alpha = 1/(n+1) up to rounding
    # Every GT pixel j of image i weighs 1 / (n |GT_i|); R̂(λ) = total weight of GT pixels with p < λ.
    weights = 1.0 / (n * gt_count)
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    unique, start = np.unique(values, return_index=True)
    cumulative = np.cumsum(np.add.reduceat(weights, start)) if values.size else np.array([])
    # λ in (unique[i], unique[i+1]] has risk cumulative[i]; the largest feasible λ is the first
    # value whose inclusion in "missed" would push the risk above the target.
    over = np.flatnonzero(cumulative > target + 1e-12)
    if over.size == 0:
        return float(np.nextafter(max_prob, np.inf)) if np.isfinite(max_prob) else 1.0
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
        raise input_error("probabilities", f"shape {probs.shape}", f"the ground truth's shape {gt.shape}", raw=True)
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
        raise input_error(
            "probabilities", f"shape {probs.shape} with ground truth {gt.shape}", "two equal (N, H, W) shapes", raw=True
        )
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
        raise input_error(
            "probabilities", f"shape {probs.shape} with ground truth {gt.shape}", "two equal (N, H, W) shapes", raw=True
        )
    check_alpha(alpha)
    if probs.size and (not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1):
        raise input_error(
            "probabilities",
            f"values in [{np.nanmin(probs):.4g}, {np.nanmax(probs):.4g}]"
            if np.isfinite(probs).any()
            else "no finite value",
            "finite values in [0, 1]",
            raw=True,
        )


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

    _parameter_constraints: ClassVar[dict] = {
        "alpha": [Interval(float, 0.0, 1.0, closed="neither")],
        "empty_gt": [Options(("zero", "exclude"))],
    }

    def __init__(self, alpha: float = 0.1, *, empty_gt: EmptyPolicy = "zero") -> None:
        self.alpha = alpha
        self.empty_gt = empty_gt

    def fit(self, cal: Predictions) -> ConformalMask:
        """Choose one λ per foreground label on the labelled calibration predictions."""
        validate_params(self)
        probs, masks = _probs_and_masks(cal, "cal predictions")
        k = probs.shape[1]
        self.lambda_ = np.array(
            [crc_threshold(probs[:, j], masks == j, self.alpha, empty_gt=self.empty_gt) for j in range(1, k)]
        )
        present = np.stack([(masks == j).reshape(masks.shape[0], -1).any(axis=1) for j in range(1, k)])
        self.n_cal_ = (present.sum(axis=1) if self.empty_gt == "exclude" else np.full(k - 1, masks.shape[0])).astype(
            np.int64
        )
        self.class_names_ = np.asarray(cal.class_names[1:]).astype(str)
        return self

    def predict(self, pred: Predictions) -> np.ndarray:
        """Conformal masks, bool ndarray (N, K - 1, H, W): pixel in mask k when p_k >= lambda_k."""
        self._check_fitted()
        probs = pred.probabilities()
        self._check_labels(probs.shape[1])
        return probs[:, 1:] >= self.lambda_[None, :, None, None]

    def fnr(self, pred: Predictions) -> np.ndarray:
        """Per-image FNR per foreground label, ndarray (N, K - 1); 0 where the GT is empty."""
        self._check_fitted()
        probs, masks = _probs_and_masks(pred, "test predictions")
        self._check_labels(probs.shape[1])
        return np.stack([fnr(probs[:, j], masks == j, self.lambda_[j - 1]) for j in range(1, probs.shape[1])], axis=1)

    def _check_fitted(self) -> None:
        if not hasattr(self, "lambda_"):
            raise input_error("ConformalMask", "an unfitted mask", "a fitted one", "call fit(cal) first", raw=True)

    def _check_labels(self, k: int) -> None:
        if k - 1 != self.lambda_.size:
            raise input_error(
                "predictions",
                f"K={k} labels",
                f"K={self.lambda_.size + 1} as in the fit",
                "use predictions of the model the mask was fitted for",
                raw=True,
            )


def _probs_and_masks(pred: Predictions, role: str) -> tuple[np.ndarray, np.ndarray]:
    from medsure.segmentation.evaluate import ground_truth_masks, require_segmentation  # no conformal code there

    require_segmentation(pred, role)
    return pred.probabilities(), ground_truth_masks(pred, role)


@dataclass
class ConformalMaskResults:
    """Everything :func:`evaluate_conformal_mask` measured; ``to_dict()`` is the JSON.

    Per-label arrays have length K - 1 (foreground labels, in ``labels`` order). ``test_fnr``,
    ``test_masks``, ``grid`` and ``cal_fnr_curves`` feed the report's figures and stay out of
    the JSON.
    """

    alpha: float
    empty_gt: str
    labels: list[str]
    lambda_: np.ndarray
    n_cal: np.ndarray
    n_test: int
    fnr: list[float | None]  # mean test FNR per label (None: no test image shows it, "exclude")
    fnr_above_alpha: list[float | None]  # fraction of test images with FNR > alpha per label
    mask_fraction: np.ndarray  # conformal-mask area / image area per label
    argmax_fraction: np.ndarray  # arg-max area / image area per label
    test_fnr: np.ndarray  # (N, K - 1)
    test_masks: np.ndarray  # bool (N, K - 1, H, W)
    grid: np.ndarray  # (M,) thresholds of the calibration FNR curves
    cal_fnr_curves: dict[str, np.ndarray]  # label -> (M,) mean calibration FNR per threshold

    def to_dict(self) -> dict[str, Any]:
        """Binary tasks get plain numbers; multi-label tasks a value per foreground label."""
        binary = len(self.labels) == 1

        def per_label(values) -> Any:
            values = [None if v is None else (int(v) if isinstance(v, (int, np.integer)) else float(v)) for v in values]
            return values[0] if binary else dict(zip(self.labels, values, strict=True))

        return {
            "alpha": self.alpha,
            "empty_gt": self.empty_gt,
            "labels": list(self.labels),
            "lambda": per_label(self.lambda_),
            "fnr": per_label(self.fnr),
            "fnr_above_alpha": per_label(self.fnr_above_alpha),
            "n_cal": per_label(self.n_cal),
            "n_test": self.n_test,
            "mask_fraction": per_label(self.mask_fraction),
            "argmax_fraction": per_label(self.argmax_fraction),
        }


def evaluate_conformal_mask(
    cal: Predictions, test: Predictions, *, alpha: float = 0.1, empty_gt: EmptyPolicy = "zero", grid_size: int = 101
) -> ConformalMaskResults:
    """Fit conformal masks on ``cal`` and measure them on ``test`` (the conformal-mask analysis).

    Refuses a calibration set too small for ``alpha`` (fewer than ⌈1/α⌉ - 1 images showing a
    label): there the guarantee can only be met by putting the whole image in the mask.

    Parameters
    ----------
    cal, test : labelled segmentation predictions of one model
    alpha : target expected per-image FNR, in (0, 1)
    empty_gt : ``"zero"`` or ``"exclude"`` (module docstring); with ``"exclude"`` the test FNR
        is averaged over the test images that show the label
    grid_size : thresholds of the calibration FNR curves kept for the figure

    Returns
    -------
    ConformalMaskResults
    """
    from medsure.segmentation.evaluate import ground_truth_masks, require_segmentation

    require_segmentation(cal, "cal predictions")
    require_segmentation(test, "test predictions")
    cal_masks, test_masks = ground_truth_masks(cal, "cal predictions"), ground_truth_masks(test, "test predictions")
    check_compatible(cal, test)
    needed = math.ceil(1.0 / check_alpha(alpha)) - 1
    if cal.n_samples < needed:
        raise input_error(
            "cal predictions",
            f"{cal.n_samples} images",
            f"at least {needed} for alpha={alpha}",
            "otherwise the guarantee forces the whole image into the mask",
            raw=True,
        )
    mask = ConformalMask(alpha=alpha, empty_gt=empty_gt).fit(cal)
    labels = [str(c) for c in mask.class_names_]
    for name, n_used in zip(labels, mask.n_cal_, strict=True):
        if n_used < needed:  # with empty_gt="exclude" only images showing the label count
            raise input_error(
                f"label {name!r}",
                f"{int(n_used)} calibration images showing it",
                f"at least {needed} for alpha={alpha}",
                "otherwise the guarantee forces the whole image into the mask",
                raw=True,
            )
    test_fnr = mask.fnr(test)
    sets = mask.predict(test)
    k = test.n_classes
    present = np.stack([(test_masks == j).reshape(test.n_samples, -1).any(axis=1) for j in range(1, k)], axis=1)
    counted = present if empty_gt == "exclude" else np.ones_like(present)
    fnr_means = [float(test_fnr[counted[:, j], j].mean()) if counted[:, j].any() else None for j in range(k - 1)]
    above = [float(np.mean(test_fnr[counted[:, j], j] > alpha)) if counted[:, j].any() else None for j in range(k - 1)]
    test_probs = test.probabilities()
    predicted = test_probs.argmax(axis=1)
    cal_probs = cal.probabilities()
    grid = np.linspace(0.0, 1.0, grid_size)
    curves = {
        name: fnr_curve(cal_probs[:, j + 1], cal_masks == j + 1, grid).mean(axis=0) for j, name in enumerate(labels)
    }
    return ConformalMaskResults(
        alpha=float(alpha),
        empty_gt=empty_gt,
        labels=labels,
        lambda_=mask.lambda_,
        n_cal=mask.n_cal_,
        n_test=test.n_samples,
        fnr=fnr_means,
        fnr_above_alpha=above,
        mask_fraction=sets.mean(axis=(0, 2, 3)),
        argmax_fraction=np.array([(predicted == j).mean() for j in range(1, k)]),
        test_fnr=test_fnr,
        test_masks=sets,
        grid=grid,
        cal_fnr_curves=curves,
    )
