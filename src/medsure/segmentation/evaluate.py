"""The segmentation-uncertainty analysis: one call computes everything its outputs show.

:func:`evaluate_segmentation` composes the pure functions of this package and returns a
:class:`SegmentationResults`; ``medsure segment-eval``, the demo and the HTML report only hand it on
(``to_dict()`` is the JSON; the array fields feed the figures of :mod:`medsure.segmentation.report`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from medsure.artifact import Predictions, check_compatible
from medsure.core import mean_dice, nanmean, undefined_as_none
from medsure.segmentation.calibration import calibration_bins, pixel_calibration, pixel_confidence
from medsure.segmentation.metrics import (
    DicePredictor,
    dice_per_label,
    hd95_per_label,
    image_dice,
    segment_calibration,
    uncertainty_dice_association,
    uncertainty_error_overlap,
)
from medsure.segmentation.regions import boundary_band
from medsure.segmentation.shift import shift_auroc
from medsure.segmentation.uncertainty import (
    DEFAULT_REDUCTION,
    REDUCTIONS,
    UNCERTAINTY_KINDS,
    image_uncertainty,
    uncertainty_maps,
)
from medsure.utils.random import make_generator
from medsure.validation import check_choice, check_int, input_error


def require_segmentation(pred: Predictions, role: str, *, need_masks: bool = True) -> None:
    """Raise a clear error unless ``pred`` is a segmentation artifact (with masks when needed).

    ``role`` names the input as the user knows it (``"--pred"``, ``"cal predictions"``).
    """
    if pred.task != "segmentation":
        raise input_error(role, f"a {pred.task} artifact", "segmentation predictions, logits (N, K, H, W)", raw=True)
    if need_masks:
        ground_truth_masks(pred, role)
    if pred.n_samples == 0:
        raise input_error(role, "no images (N=0)", "at least one image", raw=True)


def ground_truth_masks(pred: Predictions, role: str) -> np.ndarray:
    """``pred.masks``, int ndarray (N, H, W); raise naming ``role`` when the artifact has none."""
    if pred.masks is None:
        raise input_error(
            role,
            "an artifact without 'masks'",
            "ground-truth masks (N, H, W)",
            "this analysis needs labelled images",
            raw=True,
        )
    return pred.masks


def require_same_method(a: Predictions, b: Predictions, names: tuple[str, str]) -> None:
    """Raise unless both artifacts come from the same uncertainty method (sample kind and count).

    Image uncertainties are comparable only between outputs of the same kind: a sample mean is
    smoother than a single pass, which alone would "detect" a shift or bias a Dice predictor.
    """
    t_a, t_b = a.sample_logits().shape[0], b.sample_logits().shape[0]
    if (t_a, a.sample_kind) != (t_b, b.sample_kind):
        raise input_error(
            names[1],
            f"{t_b} sample(s) of kind {b.sample_kind!r}",
            f"{t_a} of kind {a.sample_kind!r} like {names[0]}",
            "image uncertainties compare only between outputs of the same method",
            raw=True,
        )


def image_scores(
    pred: Predictions,
    *,
    uncertainty: str = "entropy",
    reduce: str = DEFAULT_REDUCTION,
    maps: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Image-level uncertainty (N,) used for Dice prediction and shift detection."""
    check_choice("uncertainty", uncertainty, UNCERTAINTY_KINDS)
    maps = uncertainty_maps(pred) if maps is None else maps
    return image_uncertainty(
        maps[uncertainty],
        maps["predicted"],
        reduce=reduce,  # type: ignore[arg-type]
        foreground_prob=1.0 - maps["probabilities"][:, 0],
    )


@dataclass
class OverlayExamples:
    """A few test images for the overlay gallery, ordered from the worst to the best Dice.

    Attributes
    ----------
    index : int ndarray (R,), positions in the test artifact
    ids : str ndarray (R,)
    masks, predicted : int ndarray (R, H, W), ground truth and arg-max labels
    uncertainty : float ndarray (R, H, W), the analysed per-pixel map
    dice : float ndarray (R,), per-image Dice
    thumbnails : uint8 ndarray (R, h, w[, C]) or None, display images stored in the artifact
    """

    index: np.ndarray
    ids: np.ndarray
    masks: np.ndarray
    predicted: np.ndarray
    uncertainty: np.ndarray
    dice: np.ndarray
    thumbnails: np.ndarray | None = None


@dataclass
class SegmentationResults:
    """Everything :func:`evaluate_segmentation` measured on one labelled artifact.

    Scalars and per-label dicts go to the JSON (:meth:`to_dict`); the fields listed in
    :attr:`FIGURE_FIELDS` are arrays the report's figures need and stay out of it.
    NaN-valued metrics mean "undefined" (e.g. no segment, too few images); per-label means are
    None where no image defines them.
    """

    n_images: int
    labels: list[str]
    sample_kind: str | None
    n_model_samples: int
    uncertainty: str
    image_reduce: str
    n_bins: int
    boundary_width: int
    dice: dict[str, float | None]
    dice_mean: float | None
    hd95: dict[str, float | None]
    hd95_n_undefined: dict[str, int]
    ece: float
    ece_equal_mass: float  # top-label ECE over equal-mass bins (called ``ace`` before issue 10)
    mce: float
    ece_boundary: float
    ece_equal_mass_boundary: float
    mce_boundary: float
    boundary_pixel_fraction: float
    segment_ece: float
    n_segments: int
    ueo: float
    ueo_threshold: float
    ueo_curve: dict[str, np.ndarray]
    dice_pred_corr: float
    dice_pred_pearson: float
    dice_pred_mae: float
    #: Spearman(image uncertainty, Dice) of every reduction in REDUCTIONS (None: undefined)
    dice_spearman_by_reduction: dict[str, float | None]
    shift_auroc: float | None = None
    #: shift AUROC of every reduction in REDUCTIONS (``shift_auroc`` is the one of ``image_reduce``)
    shift_auroc_by_reduction: dict[str, float] | None = None
    n_shift_images: int | None = None
    #: Dice predictor fitted on cal, scored on these images: slope, intercept, n_fit, mae, pearson, n
    dice_predictor: dict[str, float] | None = None
    n_cal_images: int | None = None
    # ---- arrays for the figures --------------------------------------------------------------
    image_dice: np.ndarray = field(default_factory=lambda: np.zeros(0))
    image_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    segment_confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))
    segment_dice: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: reliability-diagram bins (:func:`calibration_bins`) for "all pixels" and "boundary band"
    reliability: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    examples: OverlayExamples | None = None

    FIGURE_FIELDS = ("image_dice", "image_scores", "segment_confidence", "segment_dice", "reliability", "examples")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every scalar and per-label result; shift and cal keys only when measured."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.FIGURE_FIELDS or (value is None and f.name in _OPTIONAL_KEYS):
                continue
            out[f.name] = value
        out["ueo_curve"] = {k: np.asarray(v).tolist() for k, v in self.ueo_curve.items()}
        return out


_DEFAULT_INPUT_NAMES = {"pred": "predictions", "cal": "cal predictions", "shift": "shift predictions"}
_OPTIONAL_KEYS = ("shift_auroc", "shift_auroc_by_reduction", "n_shift_images", "dice_predictor", "n_cal_images")


def evaluate_segmentation(
    pred: Predictions,
    *,
    cal: Predictions | None = None,
    shift: Predictions | None = None,
    uncertainty: str = "entropy",
    reduce: str = DEFAULT_REDUCTION,
    n_bins: int = 15,
    band_width: int = 2,
    ueo_thresholds: int = 100,
    n_examples: int = 4,
    seed: int = 0,
    maps: dict[str, np.ndarray] | None = None,
    input_names: Mapping[str, str] | None = None,
) -> SegmentationResults:
    """All segmentation-uncertainty results of one labelled artifact.

    Parameters
    ----------
    pred : labelled segmentation predictions (the test images)
    cal : optional labelled predictions of the same model on other images: a Dice predictor is
        fitted there and scored on ``pred`` (``dice_predictor``)
    shift : optional predictions of the same model on shifted images (masks not needed): the
        shift AUROC of every image-level reduction (``shift_auroc_by_reduction``)
    uncertainty : per-pixel map for UEO, Dice prediction and shift detection, one of
        :data:`~medsure.segmentation.uncertainty.UNCERTAINTY_KINDS`
    reduce : image-level reduction used for Dice prediction and ``shift_auroc``, one of
        :data:`~medsure.segmentation.uncertainty.REDUCTIONS`
    n_bins : calibration bins; band_width : boundary band half-width in pixels
    ueo_thresholds : number of UEO thresholds
    n_examples : images kept for the overlay gallery (worst, median and best Dice among them)
    seed : seeds the 2-fold cross-fitting of the Dice predictor
    maps : ``uncertainty_maps(pred)`` when the caller already has them (not recomputed)
    input_names : how errors name the inputs, keys ``"pred"``, ``"cal"``, ``"shift"`` (default
        "predictions", "cal predictions", "shift predictions"); the CLI passes its options
        (``--pred 'file.npz'``) so a message names what the user typed

    Returns
    -------
    SegmentationResults: ``dice`` and ``hd95`` (per label name, mean over images where defined),
    ``hd95_n_undefined``, ``ece``/``ece_equal_mass``/``mce`` over all pixels and in the boundary band,
    ``segment_ece``, ``ueo`` (best) with its threshold and curve, ``dice_pred_corr`` (Spearman
    correlation of image uncertainty with per-image Dice; negative is useful),
    ``dice_pred_pearson``, ``dice_pred_mae`` (2-fold cross-fitted linear predictor), per-reduction
    Spearman and shift AUROC, and the arrays the report's figures need.
    """
    role = {**_DEFAULT_INPUT_NAMES, **(input_names or {})}
    require_segmentation(pred, role["pred"])
    masks = ground_truth_masks(pred, role["pred"])
    check_choice("uncertainty", uncertainty, UNCERTAINTY_KINDS)
    check_choice("reduce", reduce, REDUCTIONS)
    n_bins = check_int("n_bins", n_bins, low=1)
    band_width = check_int("band_width", band_width, low=0)
    n_examples = check_int("n_examples", n_examples, low=0)
    if uncertainty == "mutual_information" and not pred.has_samples:
        raise input_error(
            "uncertainty",
            uncertainty,
            "predictions with a sample axis (T, N, K, H, W)",
            "MC dropout, ensemble or TTA predictions carry one",
        )
    for other, key in ((pred, "pred"), (shift, "shift"), (cal, "cal")):
        if uncertainty == "evidential_u" and other is not None and not other.evidential:
            raise input_error(
                "uncertainty",
                f"'{uncertainty}' for {role[key]}, which has no alpha",
                "evidential prediction files (with alpha) for it",
                "train with --loss evidential",
                raw=True,
            )
    for other, key in ((shift, "shift"), (cal, "cal")):
        if other is not None:
            require_segmentation(other, role[key], need_masks=key == "cal")
            check_compatible(pred, other, (role["pred"], role[key]))
            require_same_method(pred, other, (role["pred"], role[key]))
    maps = uncertainty_maps(pred) if maps is None else maps
    probs, predicted = maps["probabilities"], maps["predicted"]
    k = pred.n_classes
    names = [str(c) for c in pred.class_names[1:]]

    dice = dice_per_label(predicted, masks, k)
    hd95 = hd95_per_label(predicted, masks, k)
    overall = pixel_calibration(probs, masks, n_bins=n_bins)
    band = boundary_band(predicted, masks, width=band_width)
    boundary = pixel_calibration(probs, masks, region=band, n_bins=n_bins)
    conf, correct = pixel_confidence(probs, masks)
    segments = segment_calibration(probs, masks)
    umap = maps[uncertainty]
    ueo = uncertainty_error_overlap(umap, predicted != masks, thresholds=ueo_thresholds)
    per_image = image_dice(dice)
    scores_by_reduction = {r: image_scores(pred, uncertainty=uncertainty, reduce=r, maps=maps) for r in REDUCTIONS}
    scores = scores_by_reduction[reduce]
    association = uncertainty_dice_association(scores, per_image)
    spearman = {
        r: undefined_as_none(uncertainty_dice_association(s, per_image)["spearman"])
        for r, s in scores_by_reduction.items()
    }

    result = SegmentationResults(
        n_images=pred.n_samples,
        labels=names,
        sample_kind=pred.sample_kind,
        n_model_samples=int(pred.sample_logits().shape[0]),
        uncertainty=uncertainty,
        image_reduce=reduce,
        n_bins=n_bins,
        boundary_width=band_width,
        dice=_label_means(dice, names),
        dice_mean=undefined_as_none(mean_dice(dice)),
        hd95=_label_means(hd95, names),
        hd95_n_undefined={name: int(np.sum(~np.isfinite(hd95[:, j]))) for j, name in enumerate(names)},
        ece=overall["ece"],
        ece_equal_mass=overall["ece_equal_mass"],
        mce=overall["mce"],
        ece_boundary=boundary["ece"],
        ece_equal_mass_boundary=boundary["ece_equal_mass"],
        mce_boundary=boundary["mce"],
        boundary_pixel_fraction=float(band.mean()),
        segment_ece=float(segments["ece"]),
        n_segments=int(segments["n_segments"]),
        ueo=ueo["best"],
        ueo_threshold=ueo["best_threshold"],
        ueo_curve={"thresholds": np.asarray(ueo["thresholds"]), "ueo": np.asarray(ueo["curve"])},
        dice_pred_corr=association["spearman"],
        dice_pred_pearson=association["pearson"],
        dice_pred_mae=cross_fitted_dice_mae(scores, per_image, seed=seed),
        dice_spearman_by_reduction=spearman,
        image_dice=per_image,
        image_scores=scores,
        segment_confidence=np.asarray(segments["confidence"]),
        segment_dice=np.asarray(segments["dice"]),
        reliability={
            "all pixels": calibration_bins(conf, correct, n_bins=n_bins),
            "boundary band": calibration_bins(conf[band], correct[band], n_bins=n_bins),
        },
        examples=_examples(pred, masks, predicted, umap, per_image, n_examples),
    )
    if shift is not None:
        shift_maps = uncertainty_maps(shift)
        result.shift_auroc_by_reduction = {
            r: shift_auroc(s, image_scores(shift, uncertainty=uncertainty, reduce=r, maps=shift_maps))
            for r, s in scores_by_reduction.items()
        }
        result.shift_auroc = result.shift_auroc_by_reduction[reduce]
        result.n_shift_images = shift.n_samples
    if cal is not None:
        cal_maps = uncertainty_maps(cal)
        cal_scores = image_scores(cal, uncertainty=uncertainty, reduce=reduce, maps=cal_maps)
        cal_dice = image_dice(dice_per_label(cal_maps["predicted"], ground_truth_masks(cal, role["cal"]), k))
        predictor = DicePredictor().fit(cal_scores, cal_dice)
        result.dice_predictor = {
            "slope": predictor.slope_,
            "intercept": predictor.intercept_,
            "n_fit": predictor.n_fit_,
            **predictor.score(scores, per_image),
        }
        result.n_cal_images = cal.n_samples
    return result


def _examples(
    pred: Predictions,
    masks: np.ndarray,
    predicted: np.ndarray,
    umap: np.ndarray,
    per_image: np.ndarray,
    n_examples: int,
) -> OverlayExamples | None:
    """Images spread from the worst to the best Dice (images with undefined Dice last resort)."""
    if n_examples == 0:
        return None
    finite = np.flatnonzero(np.isfinite(per_image))
    ranked = finite[np.argsort(per_image[finite], kind="stable")] if finite.size else np.arange(pred.n_samples)
    spread = ranked[np.linspace(0, ranked.size - 1, min(n_examples, ranked.size)).astype(int)]
    picks = np.array(list(dict.fromkeys(spread.tolist())), dtype=int)  # drops repeats, keeps the order
    return OverlayExamples(
        index=picks,
        ids=np.asarray(pred.ids)[picks],
        masks=masks[picks],
        predicted=predicted[picks],
        uncertainty=umap[picks],
        dice=per_image[picks],
        thumbnails=None if pred.thumbnails is None else pred.thumbnails[picks],
    )


def cross_fitted_dice_mae(scores: np.ndarray, dice: np.ndarray, *, seed: int = 0) -> float:
    """MAE of a linear Dice-from-uncertainty predictor, 2-fold cross-fitted on one artifact.

    Each half's Dice is predicted by a line fitted on the other half, so the MAE is honest
    (no image predicts itself). NaN when fewer than 4 images have a defined Dice.
    """
    keep = np.flatnonzero(np.isfinite(scores) & np.isfinite(dice))
    if keep.size < 4:
        return float("nan")
    order = make_generator(seed).permutation(keep)
    halves = (order[: order.size // 2], order[order.size // 2 :])
    errors = []
    for fit_idx, eval_idx in (halves, halves[::-1]):
        model = DicePredictor().fit(scores[fit_idx], dice[fit_idx])
        errors.append(np.abs(model.predict(scores[eval_idx]) - dice[eval_idx]))
    return float(np.mean(np.concatenate(errors)))


def _label_means(values: np.ndarray, names: list[str]) -> dict[str, float | None]:
    return {name: undefined_as_none(nanmean(values[:, j])) for j, name in enumerate(names)}
