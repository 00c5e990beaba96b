"""The calibration analysis: fit a calibrator on the calibration artifact, measure the test
artifact before and after, and check the fit on a held-out part of the calibration data.

:func:`evaluate_calibration` computes everything the command line and the report show (metrics,
reliability-diagram bins, warnings, the held-out check) and returns a :class:`CalibrationResult`;
``calibration/report.py`` only renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsure.artifact import Predictions, check_compatible
from medsure.calibration.calibrators import Calibrator, TemperatureScaling, VectorScaling, make_calibrator
from medsure.calibration.metrics import NLL_CLIP, BinnedCalibration, calibration_summary, reliability_diagram
from medsure.utils.random import make_generator
from medsure.validation import check_int, input_error

__all__ = ["CalibrationResult", "evaluate_calibration", "HELDOUT_FRACTION"]

#: share of the calibration cases held out (not fitted on) for the worsening check
HELDOUT_FRACTION = 1 / 3
#: metrics compared on the held-out part; the calibrator is flagged when it raises any of them
HELDOUT_METRICS = ("ece", "nll")


def _bins_dict(bins: BinnedCalibration) -> dict[str, list]:
    return {
        "edges": bins.edges.tolist(),
        "count": bins.count.tolist(),
        "mean_confidence": bins.mean_score.tolist(),
        "accuracy": bins.mean_outcome.tolist(),
    }


@dataclass
class CalibrationResult:
    """Everything the calibration analysis reports.

    Attributes
    ----------
    method : str
    calibrator : fitted :class:`Calibrator` (fitted on all of ``cal``, never on ``test``)
    probs_before, probs_after : ndarray (N_test, K)
    labels : ndarray (N_test,)
    before, after : dict of metric name to float (see :func:`calibration_summary`)
    reliability_before, reliability_after : :class:`BinnedCalibration`, test reliability diagrams
    n_cal, n_test, n_bins, min_cal_samples : int
    parameters : dict, the fitted parameters (``temperature``; ``weights`` and ``bias``)
    heldout : dict, the held-out check (see :func:`evaluate_calibration`)
    warnings : list of str, also printed by the command line
    """

    method: str
    calibrator: Calibrator
    probs_before: np.ndarray
    probs_after: np.ndarray
    labels: np.ndarray
    before: dict[str, float]
    after: dict[str, float]
    reliability_before: BinnedCalibration
    reliability_after: BinnedCalibration
    n_cal: int
    n_test: int
    n_bins: int
    min_cal_samples: int
    parameters: dict[str, Any] = field(default_factory=dict)
    heldout: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def worsened_on_heldout(self) -> bool:
        return bool(self.heldout.get("worsened_on_heldout", False))

    def to_dict(self) -> dict[str, Any]:
        """The JSON record: metrics, parameters, held-out check, warnings, reliability bins."""
        return {
            "method": self.method,
            "n_cal": self.n_cal,
            "n_test": self.n_test,
            "n_bins": self.n_bins,
            "min_cal_samples": self.min_cal_samples,
            "before": self.before,
            "after": self.after,
            **self.parameters,
            "worsened_on_heldout": self.worsened_on_heldout,
            "heldout_check": self.heldout,
            "warnings": list(self.warnings),
            "reliability": {"before": _bins_dict(self.reliability_before), "after": _bins_dict(self.reliability_after)},
            "conventions": {"nll_clip": NLL_CLIP, "ece_bins": "equal width, (lo, hi], first bin closed"},
        }


def _require_labels(pred: Predictions, name: str) -> np.ndarray:
    if pred.task != "classification":
        raise input_error(name, f"a {pred.task} artifact", "classification predictions", raw=True)
    if pred.labels is None:
        raise input_error(
            name,
            "predictions without 'labels'",
            "labelled predictions (calibration metrics need ground truth)",
            raw=True,
        )
    return pred.labels


def _parameters(calibrator: Calibrator) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(calibrator, TemperatureScaling) and hasattr(calibrator, "temperature_"):
        out["temperature"] = calibrator.temperature_
        out["temperature_at_bound"] = calibrator.at_bound_
    if isinstance(calibrator, VectorScaling) and hasattr(calibrator, "weights_"):
        out["weights"] = calibrator.weights_.tolist()
        out["bias"] = calibrator.bias_.tolist()
    return out


def _heldout_check(
    cal: Predictions,
    labels: np.ndarray,
    method: str,
    calibrator_args: dict[str, Any],
    n_bins: int,
    min_samples: int,
    seed: int,
) -> dict[str, Any]:
    """Fit on a random 2/3 of ``cal``, compare ECE and NLL before/after on the other 1/3."""
    n = labels.shape[0]
    n_held = round(n * HELDOUT_FRACTION)
    n_fit = n - n_held
    if n_fit < min_samples or n_held < 2:
        return {
            "skipped": f"{n} calibration cases: a split of {n_fit} to fit (at least {min_samples} needed) "
            f"and {n_held} held out is too small",
            "worsened_on_heldout": False,
        }
    order = make_generator(seed).permutation(n)
    fit_idx, held_idx = np.sort(order[:n_fit]), np.sort(order[n_fit:])
    logits = np.asarray(cal.logits)
    take = (lambda idx: logits[:, idx]) if logits.ndim == 3 else (lambda idx: logits[idx])
    calibrator = make_calibrator(method, **calibrator_args).fit(take(fit_idx), labels[fit_idx])
    held_labels = labels[held_idx]
    probs_before = np.asarray(cal.probabilities(), dtype=np.float64)[held_idx]
    before = calibration_summary(probs_before, held_labels, n_bins=n_bins)
    after = calibration_summary(calibrator.transform(take(held_idx)), held_labels, n_bins=n_bins)
    worsened = [m for m in HELDOUT_METRICS if after[m] > before[m]]
    return {
        "n_fit": n_fit,
        "n_heldout": n_held,
        "seed": seed,
        "before": {m: before[m] for m in HELDOUT_METRICS},
        "after": {m: after[m] for m in HELDOUT_METRICS},
        "worsened_metrics": worsened,
        "worsened_on_heldout": bool(worsened),
    }


def evaluate_calibration(
    cal: Predictions,
    test: Predictions,
    *,
    method: str = "temperature",
    n_bins: int = 15,
    seed: int = 0,
    **calibrator_args: Any,
) -> CalibrationResult:
    """Fit ``method`` on ``cal`` (never on ``test``) and compare test metrics before/after.

    Logits with a sample axis ``(T, N, K)`` are used as such (mean of per-sample softmax).

    Checks that make a bad fit visible instead of silent:

    - fewer calibration cases than the calibrator's ``min_cal_samples(K)`` (see
      :mod:`medsure.calibration.calibrators`) is an error;
    - a temperature that ended at its search bound is a warning;
    - held-out check: the same calibrator is fitted on a random 2/3 of ``cal`` (``seed``) and
      ECE and NLL are compared before/after on the remaining third; if it raises either,
      ``worsened_on_heldout`` is True, the numbers are in ``heldout`` and a warning is added.
      The reported calibrator itself is fitted on all of ``cal``.
    """
    check_compatible(cal, test)
    cal_labels = _require_labels(cal, "cal")
    test_labels = _require_labels(test, "test")
    n_bins = check_int("n_bins", n_bins, low=1)
    if test.n_samples == 0:
        raise input_error("test", "0 cases", "at least one labelled test case", raw=True)
    calibrator = make_calibrator(method, **calibrator_args)
    min_samples = calibrator.min_cal_samples(cal.n_classes)
    if cal.n_samples < min_samples:
        raise input_error(
            "cal",
            f"{cal.n_samples} calibration case{'s' if cal.n_samples != 1 else ''}",
            f"at least {min_samples} for the {method} calibrator with {cal.n_classes} classes",
            "a calibrator fitted on so few cases memorises them; use a larger calibration split",
            raw=True,
        )
    calibrator.fit(cal.logits, cal_labels)
    probs_before = np.asarray(test.probabilities(), dtype=np.float64)
    probs_after = calibrator.transform(test.logits)
    parameters = _parameters(calibrator)
    warnings = []
    if isinstance(calibrator, TemperatureScaling) and parameters.get("temperature_at_bound"):
        warnings.append(
            f"the fitted temperature {calibrator.temperature_:.4g} is at its search bound "
            f"{tuple(calibrator.bounds)}: the calibration NLL wants a temperature outside it "
            "(e.g. separable calibration data); the calibrated probabilities are unreliable"
        )
    heldout = _heldout_check(cal, cal_labels, method, calibrator_args, n_bins, min_samples, seed)
    if heldout["worsened_on_heldout"]:
        changes = ", ".join(
            f"{m.upper()} {heldout['before'][m]:.4f} -> {heldout['after'][m]:.4f}" for m in heldout["worsened_metrics"]
        )
        warnings.append(
            f"{method} worsened calibration on the held-out third of the calibration data "
            f"({changes}); prefer no calibration or a simpler calibrator"
        )
    return CalibrationResult(
        method=method,
        calibrator=calibrator,
        probs_before=probs_before,
        probs_after=probs_after,
        labels=test_labels,
        before=calibration_summary(probs_before, test_labels, n_bins=n_bins),
        after=calibration_summary(probs_after, test_labels, n_bins=n_bins),
        reliability_before=reliability_diagram(probs_before, test_labels, n_bins=n_bins),
        reliability_after=reliability_diagram(probs_after, test_labels, n_bins=n_bins),
        n_cal=cal.n_samples,
        n_test=test.n_samples,
        n_bins=n_bins,
        min_cal_samples=min_samples,
        parameters=parameters,
        heldout=heldout,
        warnings=warnings,
    )
