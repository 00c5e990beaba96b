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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from medsure.errors import MedsureInputError
from medsure.utils.random import make_generator

__all__ = [
    "RiskCoverageCurve", "risk_coverage_curve", "aurc", "excess_aurc", "augrc", "auroc_failure",
    "fpr_at_95_tpr", "aupr_error", "selective_risk_at_coverage", "failure_metrics",
    "bootstrap_ci", "bootstrap_counts", "METRICS", "check_confidence_errors",
]


def check_confidence_errors(confidence: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``confidence (N,)`` (finite floats) and ``errors (N,)`` (0/1 or bool)."""
    confidence = np.asarray(confidence)
    errors = np.asarray(errors)
    if confidence.ndim != 1 or confidence.shape[0] == 0:
        raise MedsureInputError(f"confidence: shape {confidence.shape}, expected (N,) with N >= 1")
    if errors.shape != confidence.shape:
        raise MedsureInputError(f"errors: shape {errors.shape}, expected {confidence.shape} to match confidence")
    if not np.issubdtype(confidence.dtype, np.number) or not np.all(np.isfinite(confidence)):
        raise MedsureInputError("confidence: expected finite numbers (no NaN or inf)")
    if errors.dtype != bool and not np.all((errors == 0) | (errors == 1)):
        raise MedsureInputError("errors: expected binary values (1 = wrong prediction, 0 = correct)")
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
    return RiskCoverageCurve(thresholds=conf_sorted[block_end], coverage=n_acc / n,
                             selective_risk=n_err / n_acc, generalized_risk=n_err / n,
                             n_accepted=n_acc.astype(np.int64), n_errors_accepted=n_err.astype(np.int64))


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
        raise MedsureInputError(
            f"{metric} needs both correct and wrong predictions; got {n_err} errors out of {errors.shape[0]}")


def auroc_failure(confidence: np.ndarray, errors: np.ndarray) -> float:
    """ROC AUC of the confidence separating correct (positive) from wrong predictions.

    Computed as the Mann-Whitney statistic with ties counted one half (equal to
    ``sklearn.metrics.roc_auc_score(1 - errors, confidence)``)."""
    from scipy.stats import rankdata

    confidence, errors = check_confidence_errors(confidence, errors)
    _need_both(errors, "auroc_f")
    ranks = rankdata(confidence)
    correct = errors == 0
    n_pos, n_neg = int(correct.sum()), int((~correct).sum())
    return float((ranks[correct].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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


def selective_risk_at_coverage(confidence: np.ndarray, errors: np.ndarray,
                               coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95)) -> dict[float, float]:
    """Selective risk when accepting the ``ceil(c n)`` most confident cases (ties in random order,
    in expectation), for each coverage ``c`` in (0, 1]."""
    confidence, errors = check_confidence_errors(confidence, errors)
    e_k = _expected_errors(confidence, errors)
    n = confidence.shape[0]
    out = {}
    for c in coverages:
        if not 0.0 < float(c) <= 1.0:
            raise MedsureInputError(f"coverage: got {c}, expected a value in (0, 1]")
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
    order = np.argsort(-confidence, kind="stable")
    conf_sorted = confidence[order]
    starts = np.flatnonzero(np.r_[True, conf_sorted[1:] != conf_sorted[:-1]])
    w = weights[:, order].astype(np.float64)
    m = np.add.reduceat(w, starts, axis=1)  # (B, M) cases per tie block, descending confidence
    s = np.add.reduceat(w * errors[order], starts, axis=1)  # errors per block
    n = w.sum(axis=1)[:, None]
    cum_m, cum_s = np.cumsum(m, axis=1), np.cumsum(s, axis=1)
    prev_m, prev_s = cum_m - m, cum_s - s
    n_int = int(round(float(n[0, 0])))
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
    pos = m - s  # correct cases per block
    neg_below = n_err[:, None] - cum_s  # errors with strictly lower confidence
    auroc = np.sum(pos * (neg_below + 0.5 * s), axis=1) / (safe_cor * safe_err)
    tpr = (cum_m - cum_s) / safe_cor[:, None]
    first = np.argmax(tpr >= 0.95 - 1e-12, axis=1)
    fpr95 = cum_s[np.arange(w.shape[0]), first] / safe_err
    # average precision for errors, ranking by increasing confidence (blocks reversed)
    rs, rm = np.cumsum(s[:, ::-1], axis=1), np.cumsum(m[:, ::-1], axis=1)
    precision = np.divide(rs, rm, out=np.zeros_like(rs), where=rm > 0)
    ap = np.sum(s[:, ::-1] / safe_err[:, None] * precision, axis=1)
    for name, values in (("auroc_f", auroc), ("fpr95", fpr95), ("aupr_error", ap)):
        out[name] = np.where(both, values, np.nan)
    return out


def bootstrap_counts(n: int, n_boot: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Bootstrap multiplicities ``(n_boot, n)``: each row counts how often each case is drawn."""
    return make_generator(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)


def bootstrap_ci(confidence: np.ndarray, errors: np.ndarray, *, n_boot: int = 1000,
                 level: float = 0.95, seed: int | np.random.Generator = 0,
                 counts: np.ndarray | None = None, chunk: int = 250) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric in :data:`METRICS`.

    ``counts (n_boot, N)`` (from :func:`bootstrap_counts`) may be passed to share the
    resamples across CSFs (paired comparison). Resamples without both correct and wrong cases
    are dropped for the metrics that need both.
    """
    confidence, errors = check_confidence_errors(confidence, errors)
    if counts is None:
        counts = bootstrap_counts(confidence.shape[0], n_boot, seed)
    if counts.ndim != 2 or counts.shape[1] != confidence.shape[0]:
        raise MedsureInputError(f"counts: shape {counts.shape}, expected (n_boot, {confidence.shape[0]})")
    parts = [_weighted_metrics(confidence, errors, counts[i:i + chunk]) for i in range(0, counts.shape[0], chunk)]
    alpha = (1.0 - level) / 2.0
    out = {}
    for name in METRICS:
        values = np.concatenate([p[name] for p in parts])
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise MedsureInputError(f"bootstrap: no resample had both correct and wrong predictions for {name}")
        lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
        out[name] = (float(lo), float(hi))
    return out


def failure_metrics(confidence: np.ndarray, errors: np.ndarray, *, n_boot: int = 1000,
                    seed: int | np.random.Generator = 0, level: float = 0.95,
                    coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
                    counts: np.ndarray | None = None) -> dict:
    """Every failure metric with a bootstrap interval.

    Returns ``{metric: {"value": v, "ci": [lo, hi]}}`` for aurc, eaurc, augrc, auroc_f, fpr95,
    aupr_error, plus ``selective_risk`` at ``coverages``. Metrics undefined for these data
    (e.g. AUROC with no errors) are ``{"value": None, "ci": None, "undefined": reason}``.
    """
    confidence, errors = check_confidence_errors(confidence, errors)
    intervals: dict = {}
    if n_boot > 0 or counts is not None:
        if counts is None:
            counts = bootstrap_counts(confidence.shape[0], n_boot, seed)
        chunk = 250  # resamples scored at once: memory stays O(chunk x N), as in bootstrap_ci
        pieces = [_weighted_metrics(confidence, errors, counts[i:i + chunk]) for i in range(0, counts.shape[0], chunk)]
        parts = {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}
        alpha = (1.0 - level) / 2.0
        for name, values in parts.items():
            values = values[np.isfinite(values)]
            intervals[name] = [float(v) for v in np.quantile(values, [alpha, 1 - alpha])] if values.size else None
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
