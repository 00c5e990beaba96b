"""Failure detection on prediction artifacts: compute every CSF, fit the combined score on
calibration data, evaluate each CSF on test data with bootstrap intervals."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medsure.artifact import Predictions, check_compatible
from medsure.errors import MedsureInputError
from medsure.failure.combine import CombinedCSF
from medsure.failure.csf import LOGIT_CSFS, cam_concentration, confidence, logit_csfs, sample_csfs
from medsure.failure.metrics import bootstrap_counts, failure_metrics

__all__ = ["prediction_errors", "compute_csfs", "score_csfs", "evaluate_failure", "COMBINED"]

#: single-output CSFs that depend on the logits only through the softmax probabilities
PROBABILITY_CSFS = ("msr", "predictive_entropy", "margin", "topk_margin", "doctor")

COMBINED = "combined"


def prediction_errors(pred: Predictions) -> np.ndarray:
    """Binary errors ``(N,)``: 1 where ``argmax`` of the predictive probabilities != label."""
    if pred.task != "classification":
        raise MedsureInputError(f"task is {pred.task}; failure detection here needs classification predictions")
    if pred.labels is None:
        raise MedsureInputError("predictions have no 'labels'; failure metrics need ground truth")
    return (pred.probabilities().argmax(axis=1) != pred.labels).astype(np.int64)


def compute_csfs(pred: Predictions, *, samples: Predictions | None = None,
                 cams: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every CSF available for ``pred``, oriented higher = confident.

    Single-output CSFs use the mean logits; with a T axis the probability-based ones (MSR,
    entropy, margins, DOCTOR) use the mean softmax instead, the distribution whose argmax
    :func:`prediction_errors` counts as the prediction. The sample family is computed from ``pred`` itself
    when it has a T axis, and from ``samples`` (same ids, with a T axis) when given; names are
    prefixed with the sample kind (``mc_dropout_msr``...). ``cams (N, H, W)`` adds
    ``cam_concentration``.
    """
    out = logit_csfs(pred.mean_logits())
    if pred.has_samples:
        # with samples the prediction is the argmax of the mean softmax (prediction_errors): the
        # probability-based CSFs must score that same distribution, not the softmax of the mean
        # logits; max_logit and energy are defined on logits and keep the mean logits
        log_probs = np.log(np.maximum(pred.probabilities().astype(np.float64), 1e-300))
        for name in PROBABILITY_CSFS:
            out[name] = confidence(LOGIT_CSFS[name], log_probs)
    for source in (pred, samples):
        if source is None:
            continue
        if not source.has_samples:
            if source is samples:
                raise MedsureInputError("samples: logits have no sample axis, expected (T, N, K)")
            continue
        if source is samples and list(samples.ids) != list(pred.ids):
            raise MedsureInputError("samples: ids differ from the predictions' ids (same cases, same order needed)")
        out.update(sample_csfs(source.logits, prefix=source.sample_kind or "samples"))
    if cams is not None:
        if np.shape(cams)[0] != pred.n_samples:
            raise MedsureInputError(f"cams: {np.shape(cams)[0]} maps, expected {pred.n_samples}")
        out["cam_concentration"] = cam_concentration(cams)
    return out


def score_csfs(cal: Predictions, test: Predictions, *, cal_samples: Predictions | None = None,
               test_samples: Predictions | None = None, cal_cams: np.ndarray | None = None,
               test_cams: np.ndarray | None = None,
               combine: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every CSF on ``test`` (N,), the combined one fitted on ``cal`` only.

    Returns
    -------
    (test_csfs, combined): confidences by name (``"combined"`` included when it could be
    fitted) and the JSON record of the combination (names and weights, or why undefined).
    """
    check_compatible(cal, test)
    test_csfs = compute_csfs(test, samples=test_samples, cams=test_cams)
    cal_csfs = compute_csfs(cal, samples=cal_samples, cams=cal_cams)
    shared = sorted(set(cal_csfs) & set(test_csfs))
    names = list(combine) if combine is not None else shared
    unknown = sorted(set(names) - set(shared))
    if unknown:
        raise MedsureInputError(f"combine: CSF(s) {unknown} are not available on both cal and test; "
                                f"available: {shared}")
    try:
        combined = CombinedCSF(names).fit({k: cal_csfs[k] for k in names}, prediction_errors(cal))
        test_csfs[COMBINED] = combined.score(test_csfs)
        record: dict[str, Any] = {"names": combined.names_, "weights": combined.weights_.tolist(),
                                  "fitted_on": "cal"}
    except MedsureInputError as exc:
        record = {"undefined": str(exc)}
    return test_csfs, record


def evaluate_failure(cal: Predictions, test: Predictions, *, cal_samples: Predictions | None = None,
                     test_samples: Predictions | None = None, cal_cams: np.ndarray | None = None,
                     test_cams: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                     coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
                     combine: Sequence[str] | None = None,
                     scores: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Evaluate every CSF on ``test``; the combined CSF is fitted on ``cal`` only.

    ``scores`` is the output of :func:`score_csfs` when the caller already has it.

    Returns ``{"error_rate", "n_test", "n_errors", "csfs": {name: metrics}, "combined":
    {"names", "weights"}, ...}`` where metrics come from :func:`failure_metrics`. All CSFs
    share the same bootstrap resamples (seeded by ``seed``), so intervals are paired.
    """
    test_csfs, combined = scores if scores is not None else score_csfs(
        cal, test, cal_samples=cal_samples, test_samples=test_samples, cal_cams=cal_cams,
        test_cams=test_cams, combine=combine)
    test_errors = prediction_errors(test)
    result: dict[str, Any] = {
        "n_cal": cal.n_samples, "n_test": test.n_samples, "n_errors": int(test_errors.sum()),
        "error_rate": float(test_errors.mean()), "n_boot": n_boot, "seed": seed, "combined": combined,
    }
    counts = bootstrap_counts(test.n_samples, n_boot, seed) if n_boot else None
    result["csfs"] = {name: failure_metrics(conf, test_errors, n_boot=0, counts=counts, coverages=coverages)
                      for name, conf in test_csfs.items()}
    return result
