"""Calibration: metrics (ECE, MCE, ACE, class-wise ECE, Brier, NLL, reliability data) and
post-hoc calibrators fitted on calibration data only."""

from medsure.calibration.calibrators import (
    CALIBRATORS,
    Calibrator,
    HistogramBinning,
    IsotonicCalibration,
    TemperatureScaling,
    VectorScaling,
    make_calibrator,
)
from medsure.calibration.evaluate import CalibrationResult, evaluate_calibration
from medsure.calibration.metrics import (
    NLL_CLIP,
    BinnedCalibration,
    adaptive_calibration_error,
    binned_calibration,
    brier_score,
    calibration_summary,
    classwise_ece,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
)

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "HistogramBinning",
    "IsotonicCalibration",
    "TemperatureScaling",
    "VectorScaling",
    "make_calibrator",
    "BinnedCalibration",
    "adaptive_calibration_error",
    "binned_calibration",
    "brier_score",
    "calibration_summary",
    "classwise_ece",
    "expected_calibration_error",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram",
    "NLL_CLIP",
    "CalibrationResult",
    "evaluate_calibration",
]
