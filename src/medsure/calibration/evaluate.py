"""Fit a calibrator on the calibration artifact and evaluate it on the test artifact."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsure.artifact import Predictions, check_compatible
from medsure.calibration.calibrators import Calibrator, make_calibrator
from medsure.calibration.metrics import calibration_summary
from medsure.errors import MedsureInputError

__all__ = ["CalibrationResult", "calibrate_and_evaluate"]


@dataclass
class CalibrationResult:
    """Test-set metrics before and after calibration.

    Attributes
    ----------
    method : str
    calibrator : fitted :class:`Calibrator` (fitted on ``cal`` only)
    probs_before, probs_after : ndarray (N_test, K)
    labels : ndarray (N_test,)
    before, after : dict of metric name to float (see :func:`calibration_summary`)
    """

    method: str
    calibrator: Calibrator
    probs_before: np.ndarray
    probs_after: np.ndarray
    labels: np.ndarray
    before: dict[str, float]
    after: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "before": self.before, "after": self.after}
        out.update(self.extra)
        return out


def _require_labels(pred: Predictions, name: str) -> np.ndarray:
    if pred.task != "classification":
        raise MedsureInputError(f"{name}: task is {pred.task}, calibration needs classification predictions")
    if pred.labels is None:
        raise MedsureInputError(f"{name}: has no 'labels'; calibration metrics need ground truth")
    return pred.labels


def calibrate_and_evaluate(cal: Predictions, test: Predictions, *, method: str = "temperature",
                           n_bins: int = 15, **calibrator_args: Any) -> CalibrationResult:
    """Fit ``method`` on ``cal`` (never on ``test``) and compare test metrics before/after.

    Logits with a sample axis ``(T, N, K)`` are used as such (mean of per-sample softmax).
    """
    check_compatible(cal, test)
    cal_labels = _require_labels(cal, "cal")
    test_labels = _require_labels(test, "test")
    calibrator = make_calibrator(method, **calibrator_args).fit(cal.logits, cal_labels)
    probs_before = test.probabilities().astype(np.float64)
    probs_after = calibrator.transform(test.logits)
    extra: dict[str, Any] = {"n_cal": cal.n_samples, "n_test": test.n_samples, "n_bins": n_bins}
    if hasattr(calibrator, "temperature_"):
        extra["temperature"] = calibrator.temperature_
    if hasattr(calibrator, "weights_"):
        extra["weights"] = calibrator.weights_.tolist()
        extra["bias"] = calibrator.bias_.tolist()
    return CalibrationResult(
        method=method, calibrator=calibrator, probs_before=probs_before, probs_after=probs_after,
        labels=test_labels,
        before=calibration_summary(probs_before, test_labels, n_bins=n_bins),
        after=calibration_summary(probs_after, test_labels, n_bins=n_bins),
        extra=extra)
