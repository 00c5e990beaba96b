"""Review with a guarantee: choose a confidence threshold so that the error rate among the
cases the model decides alone is at most ``target_risk`` with probability at least ``1 - delta``;
everything below the threshold goes to an expert.

Selection with guaranteed risk (SGR, Geifman & El-Yaniv 2017): a binary search over the
calibration confidences tests ``ceil(log2 n)`` thresholds; each gets a one-sided Clopper-Pearson
upper bound on its selective risk at level ``delta / ceil(log2 n)`` (union bound over the
search). The most permissive tested threshold whose bound is at most ``target_risk`` is kept;
if none qualifies, every case goes to review.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy.stats import beta

from medsure.failure.metrics import check_confidence_errors
from medsure.validation import Interval, input_error, validate_params

__all__ = ["clopper_pearson_upper", "SelectiveRiskThreshold"]


def clopper_pearson_upper(n_errors: np.ndarray | int, n: np.ndarray | int, delta: float) -> np.ndarray:
    """One-sided ``1 - delta`` upper confidence bound on a binomial proportion.

    The largest ``p`` with ``P(Binomial(n, p) <= n_errors) >= delta``; 1 when ``n_errors == n``.
    """
    n_errors = np.asarray(n_errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(1.0 - delta, n_errors + 1.0, np.maximum(n - n_errors, 1e-300))
    return np.where(n_errors >= n, 1.0, bound)


class SelectiveRiskThreshold:
    """Threshold a CSF with a high-probability bound on the selective risk.

    Parameters
    ----------
    target_risk : float in (0, 1)
        Highest acceptable error rate among accepted (not reviewed) cases.
    delta : float in (0, 1)
        Allowed probability that the guarantee fails (over the draw of calibration data).

    Attributes
    ----------
    threshold_ : float
        Accept a case when ``confidence >= threshold_``; ``inf`` when nothing can be accepted.
    risk_bound_ : float
        The certified upper bound on the selective risk at ``threshold_`` (1 when nothing accepted).
    cal_coverage_ : float
        Share of calibration cases accepted.
    cal_risk_ : float
        Empirical selective risk on calibration data at ``threshold_`` (0 when nothing accepted).
    tested_ : list of dict
        Every threshold the search evaluated with its coverage, empirical risk and bound.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "target_risk": [Interval(float, 0.0, 1.0, closed="neither")],
        "delta": [Interval(float, 0.0, 1.0, closed="neither")],
    }

    def __init__(self, target_risk: float = 0.05, delta: float = 0.1) -> None:
        self.target_risk = target_risk
        self.delta = delta

    def fit(self, confidence: np.ndarray, errors: np.ndarray) -> SelectiveRiskThreshold:
        """Fit on calibration confidences ``(n,)`` (higher = confident) and errors ``(n,)``."""
        validate_params(self)
        confidence, errors = check_confidence_errors(confidence, errors)
        n = confidence.shape[0]
        levels = np.sort(confidence)  # ascending; z-th threshold accepts confidence >= levels[z]
        n_steps = max(1, math.ceil(math.log2(n)))
        delta_step = self.delta / n_steps
        lo, hi = 0, n - 1
        best = None
        tested = []
        for _ in range(n_steps):
            z = (lo + hi) // 2
            theta = levels[z]
            accepted = confidence >= theta
            m = int(accepted.sum())
            e = int(errors[accepted].sum())
            bound = float(clopper_pearson_upper(e, m, delta_step))
            tested.append({"threshold": float(theta), "coverage": m / n, "risk": e / m, "bound": bound})
            if bound <= self.target_risk:
                if best is None or m > best[1]:
                    best = (float(theta), m, e, bound)
                hi = z  # try accepting more
            else:
                lo = z + 1  # be more selective
            if lo > hi:
                break
        self.tested_ = tested
        self.n_cal_ = n
        if best is None:
            self.threshold_, self.risk_bound_, self.cal_coverage_, self.cal_risk_ = math.inf, 1.0, 0.0, 0.0
        else:
            theta, m, e, bound = best
            self.threshold_, self.risk_bound_ = theta, bound
            self.cal_coverage_, self.cal_risk_ = m / n, e / m
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise input_error(
                "SelectiveRiskThreshold",
                "an unfitted threshold",
                "a fitted one",
                "call fit(cal_confidence, cal_errors) first",
                raw=True,
            )

    def accept(self, confidence: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: True where the model decides alone, False where an expert reviews."""
        self._check_fitted()
        return np.asarray(confidence, dtype=np.float64) >= self.threshold_

    def review_share(self, confidence: np.ndarray) -> float:
        """Share of cases sent to the expert."""
        return float(1.0 - self.accept(confidence).mean())

    def score(self, confidence: np.ndarray, errors: np.ndarray) -> dict:
        """Coverage, review share and selective risk on new (test) data."""
        confidence, errors = check_confidence_errors(confidence, errors)
        accepted = self.accept(confidence)
        n_acc = int(accepted.sum())
        return {
            "target_risk": self.target_risk,
            "delta": self.delta,
            "threshold": self.threshold_ if math.isfinite(self.threshold_) else None,
            "risk_bound": self.risk_bound_,
            "cal_coverage": self.cal_coverage_,
            "cal_risk": self.cal_risk_,
            "coverage": n_acc / confidence.shape[0],
            "review_share": 1.0 - n_acc / confidence.shape[0],
            "selective_risk": float(errors[accepted].mean()) if n_acc else 0.0,
            "n_accepted": n_acc,
            "n_errors_accepted": int(errors[accepted].sum()),
        }
