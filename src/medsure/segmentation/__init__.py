"""Segmentation uncertainty: per-pixel maps, Dice/HD95, pixel/boundary/segment calibration,
uncertainty-error overlap, Dice prediction, shift detection and conformal masks.

Pure functions live in ``uncertainty``, ``regions``, ``calibration``, ``metrics``, ``shift`` and
``conformal_mask``. The analyses :func:`evaluate_segmentation` and :func:`evaluate_conformal_mask`
compose them into results objects (:class:`SegmentationResults`, :class:`ConformalMaskResults`);
``plots`` and ``report`` are the outer layer and only render those results.
"""

from medsure.segmentation.calibration import calibration_bins, calibration_errors, pixel_calibration
from medsure.segmentation.conformal_mask import (
    ConformalMask,
    ConformalMaskResults,
    crc_threshold,
    evaluate_conformal_mask,
    fnr,
)
from medsure.segmentation.evaluate import OverlayExamples, SegmentationResults, evaluate_segmentation
from medsure.segmentation.metrics import (
    DicePredictor,
    dice_per_label,
    hd95_per_label,
    image_dice,
    segment_calibration,
    uncertainty_dice_association,
    uncertainty_error_overlap,
)
from medsure.segmentation.regions import boundary_band, label_boundaries
from medsure.segmentation.shift import shift_auroc
from medsure.segmentation.uncertainty import (
    DEFAULT_REDUCTION,
    REDUCTIONS,
    entropy,
    expected_entropy,
    image_uncertainty,
    mutual_information,
    predictive_entropy,
    uncertainty_map,
    uncertainty_maps,
)

__all__ = [
    "DEFAULT_REDUCTION",
    "REDUCTIONS",
    "ConformalMask",
    "ConformalMaskResults",
    "DicePredictor",
    "OverlayExamples",
    "SegmentationResults",
    "evaluate_conformal_mask",
    "boundary_band",
    "calibration_bins",
    "calibration_errors",
    "crc_threshold",
    "dice_per_label",
    "entropy",
    "evaluate_segmentation",
    "expected_entropy",
    "fnr",
    "hd95_per_label",
    "image_dice",
    "image_uncertainty",
    "label_boundaries",
    "mutual_information",
    "pixel_calibration",
    "predictive_entropy",
    "segment_calibration",
    "shift_auroc",
    "uncertainty_dice_association",
    "uncertainty_error_overlap",
    "uncertainty_map",
    "uncertainty_maps",
]
