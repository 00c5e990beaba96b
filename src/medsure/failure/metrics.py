"""Failure-detection metrics for a confidence score (higher = more confident) and binary
errors (1 = the prediction was wrong). Pure numpy; inputs are never modified.

Ties in the confidence are handled as in fd-shifts' ``RiskCoverageStats``: the risk-coverage
curve has one point per distinct confidence value (a threshold cannot split tied cases), and
areas treat a tied block as accepted in random order, i.e. the expected number of errors among
the first ``k`` accepted cases is interpolated linearly inside the block.

AURC (Geifman et al. 2019)
    ``(1/n) sum_{k=1..n} E_k / k`` where ``E_k`` is the (tie-expected) number of errors among the
    ``k`` most confident cases: the mean selective risk over coverages ``k/n``. With no ties this
    is the usual discrete AURC; for a constant CSF it equals the error rate.
e-AURC
    AURC minus the AURC of an oracle CSF that ranks every correct case above every error.
AUGRC (Traub et al. 2024)
    Area under the generalized risk ``E(c) / n`` (errors accepted per case, not per accepted
    case) over coverage ``c`` in [0, 1], trapezoidal between the curve points; the average
    risk of an undetected failure. Oracle value ``err^2 / 2``, random CSF ``err / 2``.
AUROC_f
    ROC AUC of the confidence for separating correct (positive) from wrong cases.
FPR@95TPR
    Share of errors accepted at the most selective threshold that still accepts 95 % of correct cases.
AUPR_error
    Average precision of the negated confidence for detecting the errors.

Variants for comparison with fd-shifts (Jaeger et al. 2023, ``RiskCoverageStats``)
    Every output names its variant (:data:`VARIANTS`). fd-shifts prints areas multiplied by
    1000; medsure never scales.

    - ``aurc`` (variant ``"discrete"``): the mean selective risk above.
    - ``aurc_interpolated`` (``"fd-shifts-trapezoid"``): fd-shifts' AURC: the trapezoid rule
      over the risk-coverage points (one per distinct confidence) plus the point (coverage 0,
      risk of the most selective point). Differs from the discrete form by up to ~1 % relative.
    - ``eaurc`` (``"discrete"``): ``aurc`` minus the discrete oracle
      ``(1/n) sum_k max(k - n_correct, 0) / k``.
    - ``eaurc_interpolated`` (``"fd-shifts-continuous-oracle"``): ``aurc_interpolated`` minus
      fd-shifts' continuous oracle ``err + (1 - err) ln(1 - err)`` (err = error rate).
    - ``augrc`` (``"trapezoid"``): identical to fd-shifts' AUGRC.
    - ``fpr95`` (``"tpr>=0.95-no-interpolation"``): no interpolation between thresholds; the
      lowest FPR (share of errors accepted) among thresholds (ties grouped) accepting at least
      95 % of the correct cases.
    - ``fpr95_fdshifts`` (``"fd-shifts-tpr>=0.9495"``): fd-shifts' rule, ``min(fpr[tpr >= 0.9495])``
      on scikit-learn's ``roc_curve(correct, confidence)`` (which drops collinear points).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medsure.core import auroc_from_tie_blocks, binary_auroc, bootstrap_counts, percentile_bootstrap, tie_blocks
from medsure.errors import MedsureInputError
from medsure.validation import input_error

__all__ = [
    "RiskCoverageCurve",
    "risk_coverage_curve",
    "aurc",
    "excess_aurc",
    "augrc",
    "auroc_failure",
    "fpr_at_95_tpr",
    "aupr_error",
    "selective_risk_at_coverage",
    "failure_metrics",
    "bootstrap_ci",
    "bootstrap_counts",
    "METRICS",
    "check_confidence_errors",
    "aurc_interpolated",
    "excess_aurc_interpolated",
    "fpr_at_95_tpr_fdshifts",
    "VARIANTS",
    "VARIANT_METRICS",
    "variant_metrics",
]


def check_confidence_errors(confidence: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``confidence (N,)`` (finite floats) and ``errors (N,)`` (0/1 or bool)."""
    confidence = np.asarray(confidence)
    errors = np.asarray(errors)
    if confidence.ndim != 1 or confidence.shape[0] == 0:
        raise input_error("confidence", f"shape {confidence.shape}", "(N,) with N >= 1", raw=True)
    if errors.shape != confidence.shape:
        raise input_error("errors", f"shape {errors.shape}", f"{confidence.shape} to match confidence", raw=True)
    if not np.issubdtype(confidence.dtype, np.number) or not np.all(np.isfinite(confidence)):
        raise input_error("confidence", "NaN, inf or non-numbers", "finite numbers (no NaN or inf)", raw=True)
    if errors.dtype != bool and not np.all((errors == 0) | (errors == 1)):
        raise input_error("errors", "non-binary values", "binary values (1 = wrong prediction, 0 = correct)", raw=True)
    return confidence.astype(np.float64), errors.astype(np.float64)


@dataclass(frozen=True)
class RiskCoverageCurve:
    """One point per distinct threshold, from the most selective to full coverage.

    Attributes
    ----------
    thresholds : ndarray (M,) decreasing; a case is accepted when ``confidence >= threshold``
    coverage : ndarray (M,) share of cases accepted, increasing, last = 1
    selective_risk : ndarray (M,) error rate among accepted cases
    generalized_risk : ndarray (M,) accepted errors divided by all cases
    n_accepted, n_errors_accepted : ndarray (M,) int
    """

    thresholds: np.ndarray
    coverage: np.ndarray
    selective_risk: np.ndarray
    generalized_risk: np.ndarray
    n_accepted: np.ndarray
    n_errors_accepted: np.ndarray


def risk_coverage_curve(confidence: np.ndarray, errors: np.ndarray) -> RiskCoverageCurve:
    """The risk-coverage curve, one point per distinct confidence value (ties grouped)."""
    confidence, errors = check_confidence_errors(confidence, errors)
    order = np.argsort(-confidence, kind="stable")
    conf_sorted, err_sorted = confidence[order], errors[order]
    cum_errors = np.cumsum(err_sorted)
    # last index of each block of equal confidence
    block_end = np.flatnonzero(np.r_[conf_sorted[1:] != conf_sorted[:-1], True])
    n_acc = block_end + 1
    n_err = cum_errors[block_end]
    n = confidence.shape[0]
    return RiskCoverageCurve(
        thresholds=conf_sorted[block_end],
        coverage=n_acc / n,
        selective_risk=n_err / n_acc,
        generalized_risk=n_err / n,
        n_accepted=n_acc.astype(np.int64),
        n_errors_accepted=n_err.astype(np.int64),
    )


def _expected_errors(confidence: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """``E_k`` for k = 1..n: expected errors among the k most confident cases (ties random)."""
    curve = risk_coverage_curve(confidence, errors)
    k = np.arange(1, confidence.shape[0] + 1)
    return np.interp(k, np.r_[0, curve.n_accepted], np.r_[0.0, curve.n_errors_accepted])


def aurc(confidence: np.ndarray, errors: np.ndarray) -> float:
    """Area under the risk-coverage curve (mean selective risk over coverages k/n)."""
    confidence, errors = check_confidence_errors(confidence, errors)
    e_k = _expected_errors(confidence, errors)
    return float(np.mean(e_k / np.arange(1, e_k.shape[0] + 1)))


def _oracle_aurc(errors: np.ndarray) -> float:
    n = errors.shape[0]
    n_correct = n - int(errors.sum())
    k = np.arange(1, n + 1)
    return float(np.mean(np.maximum(k - n_correct, 0) / k))


def excess_aurc(confidence: np.ndarray, errors: np.ndarray) -> float:
    """e-AURC: AURC minus the oracle AURC for the same predictions (0 = perfect ranking)."""
    confidence, errors = check_confidence_errors(confidence, errors)
    return aurc(confidence, errors) - _oracle_aurc(errors)


def augrc(confidence: np.ndarray, errors: np.ndarray) -> float:
    """Area under the generalized risk-coverage curve (Traub et al. 2024)."""
    curve = risk_coverage_curve(confidence, errors)
    cov = np.r_[0.0, curve.coverage]
    risk = np.r_[0.0, curve.generalized_risk]
    return float(np.sum(np.diff(cov) * (risk[1:] + risk[:-1]) / 2.0))


def _need_both(errors: np.ndarray, metric: str) -> None:
    n_err = int(errors.sum())
    if n_err == 0 or n_err == errors.shape[0]:
        raise input_error(
            "errors",
            f"{n_err} errors out of {errors.shape[0]}",
            f"both correct and wrong predictions for {metric}",
            raw=True,
        )


def auroc_failure(confidence: np.ndarray, errors: np.ndarray) -> float:
    """ROC AUC of the confidence separating correct (positive) from wrong predictions.

    :func:`medsure.core.binary_auroc` (ties count one half; equal to
    ``sklearn.metrics.roc_auc_score(1 - errors, confidence)``). Raises when the errors are all
    0 or all 1 (:func:`failure_metrics` reports it as undefined)."""
    confidence, errors = check_confidence_errors(confidence, errors)
    _need_both(errors, "auroc_f")
    return binary_auroc(confidence, errors == 0)


def fpr_at_95_tpr(confidence: np.ndarray, errors: np.ndarray, tpr: float = 0.95) -> float:
    """Share of errors accepted by the highest threshold that accepts at least ``tpr`` of the
    correct predictions."""
    confidence, errors = check_confidence_errors(confidence, errors)
    _need_both(errors, "fpr95")
    curve = risk_coverage_curve(confidence, errors)
    n_err_total = errors.sum()
    n_correct_acc = curve.n_accepted - curve.n_errors_accepted
    first = int(np.searchsorted(n_correct_acc / (errors.shape[0] - n_err_total), tpr - 1e-12, side="left"))
    return float(curve.n_errors_accepted[first] / n_err_total)


def aupr_error(confidence: np.ndarray, errors: np.ndarray) -> float:
    """Average precision for detecting errors, ranking by increasing confidence."""
    from sklearn.metrics import average_precision_score

    confidence, errors = check_confidence_errors(confidence, errors)
    _need_both(errors, "aupr_error")
    return float(average_precision_score(errors, -confidence))


def selective_risk_at_coverage(
    confidence: np.ndarray, errors: np.ndarray, coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95)
) -> dict[float, float]:
    """Selective risk when accepting the ``ceil(c n)`` most confident cases (ties in random order,
    in expectation), for each coverage ``c`` in (0, 1]."""
    confidence, errors = check_confidence_errors(confidence, errors)
    e_k = _expected_errors(confidence, errors)
    n = confidence.shape[0]
    out = {}
    for c in coverages:
        if not 0.0 < float(c) <= 1.0:
            raise input_error("coverage", c, "a value in (0, 1]")
        k = max(int(np.ceil(float(c) * n - 1e-9)), 1)
        out[float(c)] = float(e_k[k - 1] / k)
    return out


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "aurc": aurc,
    "eaurc": excess_aurc,
    "augrc": augrc,
    "auroc_f": auroc_failure,
    "fpr95": fpr_at_95_tpr,
    "aupr_error": aupr_error,
}
_NEED_BOTH = {"auroc_f", "fpr95", "aupr_error"}


def _weighted_metrics(confidence: np.ndarray, errors: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """All threshold-free metrics for many reweightings of the same cases at once.

    ``weights (B, N)`` are integer multiplicities (bootstrap counts). Cases are sorted once and
    tied confidences grouped once, so each resample is a handful of vectorised operations on
    ``(B, M)`` block sums. Metrics needing both classes are NaN for resamples that lack one;
    callers drop them. With ``weights = 1`` this reproduces :func:`aurc`, :func:`augrc`...
    """
    # (B, M) cases and errors per tie block, descending confidence
    m, s = tie_blocks(confidence, errors, weights)
    n = m.sum(axis=1)[:, None]
    cum_m, cum_s = np.cumsum(m, axis=1), np.cumsum(s, axis=1)
    prev_m, prev_s = cum_m - m, cum_s - s
    n_int = round(float(n[0, 0]))
    harmonic = np.r_[0.0, np.cumsum(1.0 / np.arange(1, n_int + 1))]
    h = lambda x: harmonic[np.rint(x).astype(np.int64)]  # noqa: E731
    slope = np.divide(s, m, out=np.zeros_like(s), where=m > 0)
    # sum_k E_k / k within each block, E_k linear inside the block
    block_sum = (prev_s - slope * prev_m) * (h(cum_m) - h(prev_m)) + s
    aurc_b = block_sum.sum(axis=1) / n[:, 0]
    n_err = cum_s[:, -1]
    n_cor = n[:, 0] - n_err
    oracle = ((n[:, 0] - n_cor) - n_cor * (h(n[:, 0]) - h(n_cor))) / n[:, 0]
    gen = cum_s / n
    augrc_b = np.sum((m / n) * (gen + prev_s / n) / 2.0, axis=1)
    out = {"aurc": aurc_b, "eaurc": aurc_b - oracle, "augrc": augrc_b}
    both = (n_err > 0) & (n_cor > 0)
    safe_err, safe_cor = np.where(both, n_err, 1.0), np.where(both, n_cor, 1.0)
    auroc = auroc_from_tie_blocks(m - s, s)  # correct cases (positives) and errors per block
    tpr = (cum_m - cum_s) / safe_cor[:, None]
    first = np.argmax(tpr >= 0.95 - 1e-12, axis=1)
    fpr95 = cum_s[np.arange(m.shape[0]), first] / safe_err
    # average precision for errors, ranking by increasing confidence (blocks reversed)
    rs, rm = np.cumsum(s[:, ::-1], axis=1), np.cumsum(m[:, ::-1], axis=1)
    precision = np.divide(rs, rm, out=np.zeros_like(rs), where=rm > 0)
    ap = np.sum(s[:, ::-1] / safe_err[:, None] * precision, axis=1)
    for name, values in (("auroc_f", auroc), ("fpr95", fpr95), ("aupr_error", ap)):
        out[name] = np.where(both, values, np.nan)
    return out


def bootstrap_ci(
    confidence: np.ndarray,
    errors: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
    counts: np.ndarray | None = None,
    chunk: int = 250,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric in :data:`METRICS`.

    ``counts (n_boot, N)`` (from :func:`bootstrap_counts`) may be passed to share the
    resamples across CSFs (paired comparison). Resamples without both correct and wrong cases
    are dropped for the metrics that need both.
    """
    confidence, errors = check_confidence_errors(confidence, errors)
    intervals = percentile_bootstrap(
        lambda w: _weighted_metrics(confidence, errors, w),
        confidence.shape[0],
        n_boot=n_boot,
        level=level,
        seed=seed,
        counts=counts,
        chunk=chunk,
    )
    out: dict[str, tuple[float, float]] = {}
    for name in METRICS:
        interval = intervals[name]
        if interval is None:
            raise input_error(
                f"bootstrap of {name}",
                "no resample with both correct and wrong predictions",
                "resamples with both",
                "use more cases or more errors",
                raw=True,
            )
        out[name] = interval
    return out


def failure_metrics(
    confidence: np.ndarray,
    errors: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    level: float = 0.95,
    coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
    counts: np.ndarray | None = None,
) -> dict:
    """Every failure metric with a bootstrap interval.

    Returns ``{metric: {"value": v, "ci": [lo, hi]}}`` for aurc, eaurc, augrc, auroc_f, fpr95,
    aupr_error, plus ``selective_risk`` at ``coverages``. Metrics undefined for these data
    (e.g. AUROC with no errors) are ``{"value": None, "ci": None, "undefined": reason}``.
    """
    confidence, errors = check_confidence_errors(confidence, errors)
    intervals: dict = {}
    if n_boot > 0 or counts is not None:
        found = percentile_bootstrap(
            lambda w: _weighted_metrics(confidence, errors, w),
            confidence.shape[0],
            n_boot=n_boot,
            level=level,
            seed=seed,
            counts=counts,
        )
        intervals = {name: None if ci is None else list(ci) for name, ci in found.items()}
    out: dict = {}
    for name, fn in METRICS.items():
        try:
            value = fn(confidence, errors)
        except MedsureInputError as exc:
            if name not in _NEED_BOTH:
                raise
            out[name] = {"value": None, "ci": None, "undefined": str(exc)}
            continue
        out[name] = {"value": value, "ci": intervals.get(name)}
    out["selective_risk"] = {str(c): r for c, r in selective_risk_at_coverage(confidence, errors, coverages).items()}
    return out


# ---- fd-shifts-compatible variants ------------------------------------------------------------

#: the variant every reported metric follows (see the module docstring)
VARIANTS: dict[str, str] = {
    "aurc": "discrete",
    "aurc_interpolated": "fd-shifts-trapezoid",
    "eaurc": "discrete",
    "eaurc_interpolated": "fd-shifts-continuous-oracle",
    "augrc": "trapezoid",
    "auroc_f": "mann-whitney-ties-half",
    "fpr95": "tpr>=0.95-no-interpolation",
    "fpr95_fdshifts": "fd-shifts-tpr>=0.9495",
    "aupr_error": "average-precision",
}


def aurc_interpolated(confidence: np.ndarray, errors: np.ndarray) -> float:
    """fd-shifts' AURC: trapezoid over the risk-coverage points plus (coverage 0, first risk)."""
    curve = risk_coverage_curve(confidence, errors)
    cov = np.r_[0.0, curve.coverage]
    risk = np.r_[curve.selective_risk[0], curve.selective_risk]
    return float(np.sum(np.diff(cov) * (risk[1:] + risk[:-1]) / 2.0))


def _continuous_oracle_aurc(error_rate: np.ndarray | float) -> np.ndarray:
    """fd-shifts' oracle AURC ``err + (1 - err) ln(1 - err)`` (1 when every case is wrong)."""
    err = np.asarray(error_rate, dtype=np.float64)
    safe = np.minimum(err, 1.0 - 1e-300)
    return np.where(err >= 1.0, 1.0, err + (1.0 - err) * np.log1p(-safe))


def excess_aurc_interpolated(confidence: np.ndarray, errors: np.ndarray) -> float:
    """fd-shifts' e-AURC: :func:`aurc_interpolated` minus the continuous oracle AURC."""
    confidence, errors = check_confidence_errors(confidence, errors)
    return aurc_interpolated(confidence, errors) - float(_continuous_oracle_aurc(errors.mean()))


def fpr_at_95_tpr_fdshifts(confidence: np.ndarray, errors: np.ndarray) -> float:
    """fd-shifts' FPR@95TPR: ``min(fpr[tpr >= 0.9495])`` on ``roc_curve(correct, confidence)``."""
    from sklearn.metrics import roc_curve

    confidence, errors = check_confidence_errors(confidence, errors)
    _need_both(errors, "fpr95_fdshifts")
    fpr, tpr, _ = roc_curve(1 - errors, confidence)
    return float(np.min(fpr[tpr >= 0.9495]))


VARIANT_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "aurc_interpolated": aurc_interpolated,
    "eaurc_interpolated": excess_aurc_interpolated,
    "fpr95_fdshifts": fpr_at_95_tpr_fdshifts,
}


def _weighted_interpolated(confidence: np.ndarray, errors: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`aurc_interpolated` and :func:`excess_aurc_interpolated` for bootstrap
    multiplicities ``weights (B, N)`` at once (tie blocks of the sorted confidence)."""
    m, s = tie_blocks(confidence, errors, weights)  # (B, M) cases and errors per tie block
    cum_m = np.cumsum(m, axis=1)
    cum_s = np.cumsum(s, axis=1)
    n = cum_m[:, -1:]
    risk = np.divide(cum_s, cum_m, out=np.zeros_like(cum_s), where=cum_m > 0)
    prev_m = cum_m - m
    prev_risk = np.concatenate([risk[:, :1], risk[:, :-1]], axis=1)
    # the first accepted block joins the point (coverage 0, its own risk)
    prev_risk = np.where(prev_m > 0, prev_risk, risk)
    area = np.sum(m / n * (risk + prev_risk) / 2.0, axis=1)
    return {"aurc_interpolated": area, "eaurc_interpolated": area - _continuous_oracle_aurc(cum_s[:, -1] / n[:, 0])}


def variant_metrics(
    confidence: np.ndarray, errors: np.ndarray, *, counts: np.ndarray | None = None, level: float = 0.95
) -> dict[str, dict]:
    """The fd-shifts-compatible metrics of :data:`VARIANT_METRICS`, each
    ``{"value", "ci", "variant"}`` (``"undefined"`` with a reason instead of a value when the
    data cannot define it). Intervals use the bootstrap multiplicities ``counts (B, N)`` when
    given (the same resamples as :func:`failure_metrics`); ``fpr95_fdshifts`` has none."""
    confidence, errors = check_confidence_errors(confidence, errors)
    intervals: dict[str, list[float]] = {}
    if counts is not None:
        found = percentile_bootstrap(
            lambda w: _weighted_interpolated(confidence, errors, w), confidence.shape[0], level=level, counts=counts
        )
        intervals = {name: list(ci) for name, ci in found.items() if ci is not None}
    out: dict[str, dict] = {}
    for name, fn in VARIANT_METRICS.items():
        try:
            value = fn(confidence, errors)
        except MedsureInputError as exc:
            out[name] = {"value": None, "ci": None, "undefined": str(exc), "variant": VARIANTS[name]}
            continue
        out[name] = {"value": value, "ci": intervals.get(name), "variant": VARIANTS[name]}
    return out
