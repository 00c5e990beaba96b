"""One-call evaluation of a segmentation prediction artifact (composes the pure functions).

Used by ``medsure segment-eval`` and by the report; returns plain dicts of floats and arrays.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medsure.artifact import Predictions, check_compatible
from medsure.errors import MedsureInputError
from medsure.segmentation.calibration import pixel_calibration
from medsure.segmentation.metrics import (DicePredictor, dice_per_label, hd95_per_label, image_dice,
                                          segment_calibration, uncertainty_dice_association,
                                          uncertainty_error_overlap)
from medsure.segmentation.regions import boundary_band
from medsure.segmentation.shift import shift_auroc
from medsure.segmentation.uncertainty import UNCERTAINTY_KINDS, image_uncertainty, uncertainty_maps
from medsure.utils.random import make_generator


def require_segmentation(pred: Predictions, role: str, *, need_masks: bool = True) -> None:
    """Raise a clear error unless ``pred`` is a segmentation artifact (with masks when needed)."""
    if pred.task != "segmentation":
        raise MedsureInputError(f"{role}: expected segmentation predictions (N, K, H, W), got task {pred.task!r}")
    if need_masks and pred.masks is None:
        raise MedsureInputError(f"{role}: has no 'masks' (N, H, W); this analysis needs ground-truth masks")
    if pred.n_samples == 0:
        raise MedsureInputError(f"{role}: holds no images (N=0)")


def image_scores(pred: Predictions, *, uncertainty: str = "entropy",
                 reduce: str = "foreground_mean") -> np.ndarray:
    """Image-level uncertainty (N,) used for Dice prediction and shift detection."""
    maps = uncertainty_maps(pred)
    if uncertainty not in UNCERTAINTY_KINDS:
        raise MedsureInputError(f"uncertainty {uncertainty!r} unknown, expected one of {UNCERTAINTY_KINDS}")
    return image_uncertainty(maps[uncertainty], maps["predicted"], reduce=reduce,  # type: ignore[arg-type]
                             foreground_prob=1.0 - maps["probabilities"][:, 0])


def evaluate_segmentation(pred: Predictions, *, shift: Predictions | None = None,
                          uncertainty: str = "entropy", reduce: str = "foreground_mean",
                          n_bins: int = 15, band_width: int = 2, ueo_thresholds: int = 100,
                          seed: int = 0, maps: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """All segmentation-uncertainty metrics of one labelled artifact.

    Parameters
    ----------
    pred : labelled segmentation predictions
    shift : optional predictions of the same model on shifted images (masks not needed)
    uncertainty : per-pixel map for UEO, Dice prediction and shift detection
    reduce : image-level aggregate (``"mean"``, ``"foreground_mean"`` or ``"foreground_weighted"``,
        see :func:`medsure.segmentation.uncertainty.image_uncertainty`)
    n_bins : calibration bins; band_width : boundary band half-width in pixels
    ueo_thresholds : number of UEO thresholds
    seed : seeds the 2-fold cross-fitting of the Dice predictor
    maps : ``uncertainty_maps(pred)`` when the caller already has them (not recomputed)

    Returns
    -------
    dict: ``dice`` and ``hd95`` (per label name, mean over images where defined),
    ``hd95_n_undefined`` (per label), ``ece``/``ace``/``mce``, ``ece_boundary``/``ace_boundary``/
    ``mce_boundary``, ``segment_ece``, ``ueo`` (best), ``ueo_threshold``, ``ueo_curve``
    (``{"thresholds", "ueo"}``), ``dice_pred_corr`` (Spearman correlation of image uncertainty
    with per-image Dice; negative is useful), ``dice_pred_pearson``, ``dice_pred_mae`` (2-fold
    cross-fitted linear predictor), ``shift_auroc`` (when ``shift`` is given), and settings.
    """
    require_segmentation(pred, "predictions")
    if shift is not None:
        require_segmentation(shift, "shift predictions", need_masks=False)
        check_compatible(pred, shift, ("predictions", "shift predictions"))
        # image uncertainties are comparable only between outputs of the same kind: a sample
        # mean is smoother than a single pass, which alone would "detect" a shift
        t_pred, t_shift = pred.sample_logits().shape[0], shift.sample_logits().shape[0]
        if (t_pred, pred.sample_kind) != (t_shift, shift.sample_kind):
            raise MedsureInputError(
                f"shift predictions have {t_shift} sample(s) of kind {shift.sample_kind!r} but predictions have "
                f"{t_pred} of kind {pred.sample_kind!r}; shift detection needs both from the same method")
    maps = uncertainty_maps(pred) if maps is None else maps
    if uncertainty == "mutual_information" and not pred.has_samples:
        raise MedsureInputError("uncertainty 'mutual_information' needs predictions with a sample axis")
    probs, predicted, masks = maps["probabilities"], maps["predicted"], pred.masks
    k = pred.n_classes
    names = [str(c) for c in pred.class_names[1:]]

    dice = dice_per_label(predicted, masks, k)
    hd95 = hd95_per_label(predicted, masks, k)
    overall = pixel_calibration(probs, masks, n_bins=n_bins)
    band = boundary_band(predicted, masks, width=band_width)
    boundary = pixel_calibration(probs, masks, region=band, n_bins=n_bins)
    segments = segment_calibration(probs, masks)
    umap = maps[uncertainty]
    ueo = uncertainty_error_overlap(umap, predicted != masks, thresholds=ueo_thresholds)
    scores = image_uncertainty(umap, predicted, reduce=reduce,  # type: ignore[arg-type]
                               foreground_prob=1.0 - probs[:, 0])
    per_image = image_dice(dice)
    association = uncertainty_dice_association(scores, per_image)

    result: dict[str, Any] = {
        "n_images": pred.n_samples,
        "labels": names,
        "sample_kind": pred.sample_kind,
        "n_model_samples": int(pred.sample_logits().shape[0]),
        "uncertainty": uncertainty,
        "image_reduce": reduce,
        "dice": _label_means(dice, names),
        "dice_mean": _nanmean(image_dice(dice)),
        "hd95": _label_means(hd95, names),
        "hd95_n_undefined": {name: int(np.sum(~np.isfinite(hd95[:, j]))) for j, name in enumerate(names)},
        "ece": overall["ece"], "ace": overall["ace"], "mce": overall["mce"],
        "ece_boundary": boundary["ece"], "ace_boundary": boundary["ace"], "mce_boundary": boundary["mce"],
        "boundary_width": band_width,
        "boundary_pixel_fraction": float(band.mean()),
        "segment_ece": segments["ece"],
        "n_segments": segments["n_segments"],
        "ueo": ueo["best"],
        "ueo_threshold": ueo["best_threshold"],
        "ueo_curve": {"thresholds": ueo["thresholds"], "ueo": ueo["curve"]},
        "dice_pred_corr": association["spearman"],
        "dice_pred_pearson": association["pearson"],
        "dice_pred_mae": cross_fitted_dice_mae(scores, per_image, seed=seed),
        "n_bins": n_bins,
    }
    if shift is not None:
        shift_scores = image_scores(shift, uncertainty=uncertainty, reduce=reduce)
        result["shift_auroc"] = shift_auroc(scores, shift_scores)
        result["n_shift_images"] = shift.n_samples
    return result


def cross_fitted_dice_mae(scores: np.ndarray, dice: np.ndarray, *, seed: int = 0) -> float:
    """MAE of a linear Dice-from-uncertainty predictor, 2-fold cross-fitted on one artifact.

    Each half's Dice is predicted by a line fitted on the other half, so the MAE is honest
    (no image predicts itself). NaN when fewer than 4 images have a defined Dice.
    """
    keep = np.flatnonzero(np.isfinite(scores) & np.isfinite(dice))
    if keep.size < 4:
        return float("nan")
    order = make_generator(seed).permutation(keep)
    halves = (order[: order.size // 2], order[order.size // 2:])
    errors = []
    for fit_idx, eval_idx in (halves, halves[::-1]):
        model = DicePredictor().fit(scores[fit_idx], dice[fit_idx])
        errors.append(np.abs(model.predict(scores[eval_idx]) - dice[eval_idx]))
    return float(np.mean(np.concatenate(errors)))


def _label_means(values: np.ndarray, names: list[str]) -> dict[str, float | None]:
    return {name: _nanmean(values[:, j]) for j, name in enumerate(names)}


def _nanmean(values: np.ndarray) -> float | None:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else None
