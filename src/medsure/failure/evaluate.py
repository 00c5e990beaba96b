"""The failure-detection analysis on prediction artifacts: compute every CSF, fit the combined
score and the review threshold on calibration data, evaluate each CSF on test data with
bootstrap intervals, and collect what a reader needs (risk-coverage curves, the most confident
wrong cases).

:func:`evaluate_failure` computes everything the command line and the report show and returns a
:class:`FailureResult`; ``failure/report.py`` only renders it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsure.artifact import Predictions, check_compatible
from medsure.errors import MedsureInputError
from medsure.failure.combine import CombinedCSF
from medsure.failure.csf import (
    LOGIT_CSFS,
    cam_concentration,
    confidence,
    evidential_csfs,
    logit_csfs,
    sample_csfs,
)
from medsure.failure.metrics import (
    VARIANTS,
    RiskCoverageCurve,
    bootstrap_counts,
    failure_metrics,
    risk_coverage_curve,
    variant_metrics,
)
from medsure.failure.review import SelectiveRiskThreshold
from medsure.validation import check_int, input_error

__all__ = [
    "prediction_errors",
    "compute_csfs",
    "score_csfs",
    "evaluate_failure",
    "FailureResult",
    "COMBINED",
    "CURVE_CSFS",
]

COMBINED = "combined"
#: CSFs whose risk-coverage curves the results carry for plotting (with the oracle), when present
CURVE_CSFS = ("msr", "doctor", "energy", COMBINED)


def prediction_errors(pred: Predictions, what: str = "predictions") -> np.ndarray:
    """Binary errors ``(N,)``: 1 where ``argmax`` of the predictive probabilities != label.

    ``what`` names ``pred`` in error messages (``"test"``, ``"--test 'test.npz'"``).
    """
    if pred.task != "classification":
        raise input_error(
            what,
            f"a {pred.task} prediction file",
            "a classification prediction file",
            "failure detection here needs classes",
            raw=True,
        )
    if pred.labels is None:
        raise input_error(
            what, "no 'labels' key", "labelled predictions", "failure metrics need ground truth", raw=True
        )
    return (pred.probabilities().argmax(axis=1) != pred.labels).astype(np.int64)


def compute_csfs(
    pred: Predictions, *, samples: Predictions | None = None, cams: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Every CSF available for ``pred``, oriented higher = confident.

    Single-output CSFs use the mean logits; with a T axis the CSFs declared
    ``probability_only`` (MSR, entropy, margins, DOCTOR) use the mean softmax instead, the
    distribution whose argmax :func:`prediction_errors` counts as the prediction. The sample
    family is computed from ``pred`` itself when it has a T axis, and from ``samples`` (same
    ids, with a T axis) when given; names are prefixed with the sample kind
    (``mc_dropout_msr``...). ``cams (N, H, W)`` (predicted-class maps) adds ``cam_concentration``.
    """
    out = logit_csfs(pred.mean_logits())
    if pred.has_samples:
        # with samples the prediction is the argmax of the mean softmax (prediction_errors): the
        # probability-only CSFs must score that same distribution, not the softmax of the mean
        # logits; the others (max_logit, energy) are defined on logits and keep the mean logits
        log_probs = np.log(np.maximum(pred.probabilities().astype(np.float64), 1e-300))
        for name, spec in LOGIT_CSFS.items():
            if spec.probability_only:
                out[name] = confidence(spec, log_probs)
    for source in (pred, samples):
        if source is None:
            continue
        if not source.has_samples:
            if source is samples:
                raise input_error("samples", "logits without a sample axis", "logits (T, N, K)", raw=True)
            continue
        if source is samples and list(samples.ids) != list(pred.ids):
            raise input_error(
                "samples ids", "ids that differ from the predictions' ids", "the same cases in the same order", raw=True
            )
        out.update(sample_csfs(source.logits, prefix=source.sample_kind or "samples"))
    if pred.evidential:  # Dirichlet outputs: u, dissonance, expected entropy, MI beside the others
        out.update(evidential_csfs(np.exp(pred.mean_logits().astype(np.float64))))
    if cams is not None:
        if np.shape(cams)[0] != pred.n_samples:
            raise input_error("cams", f"{np.shape(cams)[0]} maps", f"{pred.n_samples} (one per case)", raw=True)
        out["cam_concentration"] = cam_concentration(cams)
    return out


def _cal_errors_or_reason(cal: Predictions) -> tuple[np.ndarray | None, str | None]:
    try:
        return prediction_errors(cal, "cal"), None
    except MedsureInputError as exc:
        return None, str(exc)


def score_csfs(
    cal: Predictions,
    test: Predictions,
    *,
    cal_samples: Predictions | None = None,
    test_samples: Predictions | None = None,
    cal_cams: np.ndarray | None = None,
    test_cams: np.ndarray | None = None,
    combine: Sequence[str] | None = None,
    combine_weights: Mapping[str, float] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """Every CSF on ``test`` and on ``cal`` (N,), the combined one fitted on ``cal`` only.

    ``combine_weights`` fixes the combination's weights (over CSFs standardised on ``cal``; see
    :class:`CombinedCSF`) instead of learning them; its keys are the combined CSFs.

    Returns
    -------
    (test_csfs, cal_csfs, combined): confidences by name (``"combined"`` included when it could
    be fitted) and the JSON record of the combination: ``status`` ("fitted" or "undefined"),
    ``mode`` ("learned" or "fixed"), and ``names``/``weights`` or the ``reason`` it is undefined.
    """
    check_compatible(cal, test)
    test_csfs = compute_csfs(test, samples=test_samples, cams=test_cams)
    cal_csfs = compute_csfs(cal, samples=cal_samples, cams=cal_cams)
    shared = sorted(set(cal_csfs) & set(test_csfs))
    if combine_weights is not None:
        names = list(combine) if combine is not None else list(combine_weights)
    else:
        names = list(combine) if combine is not None else shared
    unknown = sorted(set(names) - set(shared))
    if unknown:
        option = "combine_weights" if combine_weights is not None else "combine"
        raise input_error(option, unknown, f"CSFs available on both cal and test: {', '.join(shared)}")
    combiner = CombinedCSF(names, weights=combine_weights)
    record: dict[str, Any] = {"mode": combiner.mode}
    cal_errors, no_labels = _cal_errors_or_reason(cal)
    try:
        if combiner.mode == "learned" and cal_errors is None:
            raise input_error(
                "cal", "no usable labels", "labelled calibration cases for the learned combination", no_labels, raw=True
            )
        combiner.fit({k: cal_csfs[k] for k in names}, cal_errors)
    except MedsureInputError as exc:
        record.update({"status": "undefined", "reason": str(exc)})
        return test_csfs, cal_csfs, record
    test_csfs[COMBINED] = combiner.predict(test_csfs)
    cal_csfs[COMBINED] = combiner.predict(cal_csfs)
    record.update(
        {
            "status": "fitted",
            "names": combiner.names_,
            "weights": combiner.weights_.tolist(),
            "intercept": combiner.intercept_,
            "standardised_on": "cal",
            "fitted_on": "cal" if combiner.mode == "learned" else None,
        }
    )
    return test_csfs, cal_csfs, record


@dataclass
class FailureResult:
    """Everything the failure-detection analysis reports.

    Attributes
    ----------
    n_cal, n_test, n_errors : int
    error_rate : float
    n_boot, seed : int
    csfs : dict name -> metrics (each ``{"value", "ci", "variant"}``, see :mod:`failure.metrics`)
    combined : dict, the combination record (see :func:`score_csfs`)
    curves : dict name -> :class:`RiskCoverageCurve` for :data:`CURVE_CSFS` and ``"oracle"``
    review : dict or None, the review threshold fitted on cal and applied to test
    worst_cases : list of dict, the most confident wrong test predictions (by MSR)
    test_confidences : dict name -> ndarray (N_test,), every CSF on test (not in the JSON)
    """

    n_cal: int
    n_test: int
    n_errors: int
    error_rate: float
    n_boot: int
    seed: int
    csfs: dict[str, dict[str, Any]]
    combined: dict[str, Any]
    curves: dict[str, RiskCoverageCurve] = field(default_factory=dict)
    review: dict[str, Any] | None = None
    worst_cases: list[dict[str, Any]] = field(default_factory=list)
    test_confidences: dict[str, np.ndarray] = field(default_factory=dict)

    def ranked(self) -> list[tuple[str, dict[str, Any]]]:
        """CSFs sorted by (discrete) AURC, best first."""
        return sorted(self.csfs.items(), key=lambda kv: kv[1]["aurc"]["value"])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_cal": self.n_cal,
            "n_test": self.n_test,
            "n_errors": self.n_errors,
            "error_rate": self.error_rate,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "combined": self.combined,
            "csfs": self.csfs,
            "worst_cases": self.worst_cases,
            "variants": dict(VARIANTS),
        }
        if self.review is not None:
            out["review"] = self.review
        return out


def _worst_cases(pred: Predictions, errors: np.ndarray, msr: np.ndarray, n: int) -> list[dict[str, Any]]:
    labels = pred.labels
    if labels is None:  # errors were counted from these labels, so this names the file if ever reached
        raise input_error("test", "no 'labels' key", "labelled predictions", raw=True)
    probs = pred.probabilities()
    names = [str(c) for c in pred.class_names]
    wrong = np.flatnonzero(errors)
    index = wrong[np.argsort(-msr[wrong], kind="stable")[:n]]
    return [
        {
            "index": int(i),
            "id": str(pred.ids[i]),
            "predicted": names[int(probs[i].argmax())],
            "truth": names[int(labels[i])],
            "probability": float(probs[i].max()),
        }
        for i in index
    ]


def _review(
    cal_csfs: dict[str, np.ndarray],
    test_csfs: dict[str, np.ndarray],
    cal: Predictions,
    test_errors: np.ndarray,
    csf: str,
    target_risk: float,
    delta: float,
) -> dict[str, Any]:
    if csf not in cal_csfs or csf not in test_csfs:
        raise input_error("review csf", csf, "one of " + ", ".join(sorted(set(cal_csfs) & set(test_csfs))))
    sgr = SelectiveRiskThreshold(target_risk, delta).fit(cal_csfs[csf], prediction_errors(cal))
    certified = math.isfinite(sgr.threshold_)
    return {
        "csf": csf,
        **sgr.score(test_csfs[csf], test_errors),
        "n_cal": sgr.n_cal_,
        "certified": certified,
        "tested": sgr.tested_,
    }


def evaluate_failure(
    cal: Predictions,
    test: Predictions,
    *,
    cal_samples: Predictions | None = None,
    test_samples: Predictions | None = None,
    cal_cams: np.ndarray | None = None,
    test_cams: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
    combine: Sequence[str] | None = None,
    combine_weights: Mapping[str, float] | None = None,
    target_risk: float | None = None,
    delta: float = 0.1,
    review_csf: str = "msr",
    n_worst: int = 8,
) -> FailureResult:
    """Evaluate every CSF on ``test``; the combined CSF and the review threshold use ``cal`` only.

    All CSFs share the same bootstrap resamples (seeded by ``seed``), so intervals are paired.
    Each metric names its variant (discrete AURC and the fd-shifts-compatible interpolated one,
    see :mod:`medsure.failure.metrics`). With ``target_risk`` a review threshold on
    ``review_csf`` is fitted on ``cal`` (selective risk <= target with probability >= 1 - delta)
    and applied to ``test``. The combined CSF is learned, or uses ``combine_weights``; when it
    cannot be fitted (too few or unlabelled calibration cases) ``combined`` says why.
    """
    for name, pred in (("cal", cal), ("test", test)):
        if pred.n_samples == 0:
            raise input_error(name, "0 cases", "at least one case", "the prediction file is empty", raw=True)
    n_boot = check_int("n_boot", n_boot, low=0)
    test_errors = prediction_errors(test, "test")
    test_csfs, cal_csfs, combined = score_csfs(
        cal,
        test,
        cal_samples=cal_samples,
        test_samples=test_samples,
        cal_cams=cal_cams,
        test_cams=test_cams,
        combine=combine,
        combine_weights=combine_weights,
    )
    review = (
        _review(cal_csfs, test_csfs, cal, test_errors, review_csf, target_risk, delta)
        if target_risk is not None
        else None
    )
    counts = bootstrap_counts(test.n_samples, n_boot, seed) if n_boot else None
    csfs = {}
    for name, conf in test_csfs.items():
        metrics = failure_metrics(conf, test_errors, n_boot=0, counts=counts, coverages=coverages)
        for key, metric in metrics.items():
            if key in VARIANTS:
                metric["variant"] = VARIANTS[key]
        metrics.update(variant_metrics(conf, test_errors, counts=counts))
        csfs[name] = metrics
    curves = {name: risk_coverage_curve(test_csfs[name], test_errors) for name in CURVE_CSFS if name in test_csfs}
    curves["oracle"] = risk_coverage_curve(-test_errors.astype(np.float64), test_errors)
    return FailureResult(
        n_cal=cal.n_samples,
        n_test=test.n_samples,
        n_errors=int(test_errors.sum()),
        error_rate=float(test_errors.mean()),
        n_boot=n_boot,
        seed=seed,
        csfs=csfs,
        combined=combined,
        curves=curves,
        review=review,
        worst_cases=_worst_cases(test, test_errors, test_csfs["msr"], n_worst),
        test_confidences=test_csfs,
    )
