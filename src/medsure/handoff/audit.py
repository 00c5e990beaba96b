"""Audit: once expert labels exist, did the policy's guarantees hold on the triaged cases?

:func:`evaluate_audit` compares the realised error rate of the auto-accepted cases (the model's
label against the expert's) with the promised bound, and the realised coverage of the prediction
sets with ``1 - alpha``, each with an exact two-sided Clopper-Pearson interval and a one-sided
binomial test. Only cases with an expert label count; "unsure" decisions are counted and left out.

Reading the verdict
-------------------
``held``: the realised rate is on the promised side. ``not held, within sampling error``: it is
not, but a binomial test at ``test_level`` cannot tell it from the promise (few labelled cases).
``violated``: the test rejects the promise. ``no data``: no auto-accepted case has an expert label
(an audit needs experts to label a random sample of auto-accepted cases too). The risk guarantee
itself holds with probability ``1 - delta`` over the calibration draw, so an occasional
``violated`` is possible even for a correct policy; several in a row point to a shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import beta, binom

from medsure.validation import Interval, input_error, validate_params

__all__ = ["AuditResults", "clopper_pearson_interval", "evaluate_audit", "verdict"]


def clopper_pearson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided ``level`` confidence interval for a binomial proportion ``k / n``.

    Returns ``(nan, nan)`` only when ``n == 0`` is avoided by callers; raises for ``n < 1``.
    """
    if n < 1:
        raise input_error("n", n, "at least one trial for an interval")
    tail = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def verdict(k: int, n: int, promised: float, *, upper: bool, test_level: float = 0.05) -> tuple[str, float | None]:
    """``(verdict, p_value)`` for an observed ``k / n`` against a promised bound.

    Parameters
    ----------
    k, n : events and trials (errors among auto-accepted cases, or covered cases)
    promised : the bound
    upper : True when the promise is ``rate <= promised`` (risk), False for ``rate >= promised``
        (coverage)
    test_level : level of the one-sided exact binomial test
    """
    if n == 0:
        return "no data", None
    rate = k / n
    if upper:
        p = float(binom.sf(k - 1, n, promised))  # P(X >= k) under rate = promised
        on_side = rate <= promised
    else:
        p = float(binom.cdf(k, n, promised))  # P(X <= k) under rate = promised
        on_side = rate >= promised
    if on_side:
        return "held", p
    return ("violated" if p < test_level else "not held, within sampling error"), p


@dataclass
class AuditResults:
    """What :func:`evaluate_audit` measured; ``to_dict()`` is the JSON."""

    n_cases: int
    n_auto: int
    n_labelled: int
    n_unsure: int
    n_auto_labelled: int
    n_auto_errors: int
    realised_risk: float | None
    risk_interval: tuple[float, float] | None
    promised_risk: float | None
    delta: float | None
    risk_verdict: str
    risk_p_value: float | None
    n_set_labelled: int
    n_covered: int
    realised_coverage: float | None
    coverage_interval: tuple[float, float] | None
    promised_coverage: float | None
    coverage_verdict: str
    coverage_p_value: float | None
    level: float
    test_level: float
    held: bool | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_cases": self.n_cases,
            "n_auto": self.n_auto,
            "n_labelled": self.n_labelled,
            "n_unsure": self.n_unsure,
            "risk": {
                "promised": self.promised_risk,
                "delta": self.delta,
                "n_auto_labelled": self.n_auto_labelled,
                "n_errors": self.n_auto_errors,
                "realised": self.realised_risk,
                "interval": None if self.risk_interval is None else list(self.risk_interval),
                "verdict": self.risk_verdict,
                "p_value": self.risk_p_value,
            },
            "coverage": {
                "promised": self.promised_coverage,
                "n_labelled": self.n_set_labelled,
                "n_covered": self.n_covered,
                "realised": self.realised_coverage,
                "interval": None if self.coverage_interval is None else list(self.coverage_interval),
                "verdict": self.coverage_verdict,
                "p_value": self.coverage_p_value,
            },
            "interval_level": self.level,
            "test_level": self.test_level,
            "held": self.held,
            "notes": list(self.notes),
        }


def evaluate_audit(
    auto: np.ndarray,
    predicted: np.ndarray,
    sets: np.ndarray | None,
    expert: np.ndarray,
    *,
    promised_risk: float | None,
    delta: float | None,
    alpha: float | None,
    level: float = 0.95,
    test_level: float = 0.05,
) -> AuditResults:
    """Realised risk and coverage of a triage against the promised bounds.

    Parameters
    ----------
    auto : bool ndarray (N,) — the triage decision (True = auto-accepted)
    predicted : int ndarray (N,) — the model's label
    sets : bool ndarray (N, K) or None — the prediction sets
    expert : int ndarray (N,) — the expert's label index; -1 no decision, -2 "unsure"
    promised_risk, delta : the policy's risk guarantee (None: none was made)
    alpha : the sets' miscoverage (None: no sets)
    level : level of the two-sided Clopper-Pearson intervals
    test_level : level of the one-sided binomial tests behind the verdicts

    Returns
    -------
    AuditResults
    """
    holder = _Levels(level, test_level)
    validate_params(holder)
    auto = np.asarray(auto, dtype=bool)
    predicted = np.asarray(predicted)
    expert = np.asarray(expert)
    n = auto.shape[0]
    if predicted.shape != (n,) or expert.shape != (n,):
        raise input_error(
            "audit inputs", f"shapes {auto.shape}, {predicted.shape}, {expert.shape}", "three arrays (N,)", raw=True
        )
    labelled = expert >= 0
    auto_lab = auto & labelled
    m = int(auto_lab.sum())
    e = int((predicted[auto_lab] != expert[auto_lab]).sum())
    notes: list[str] = []
    if promised_risk is None:
        risk_verdict, risk_p = "no guarantee made", None
        notes.append("the policy made no risk guarantee (fitted without --risk)")
    else:
        risk_verdict, risk_p = verdict(e, m, promised_risk, upper=True, test_level=test_level)
    if m == 0:
        notes.append("no auto-accepted case has an expert label: review a random sample of them to audit the risk")
    n_set = 0
    covered = 0
    if sets is not None and alpha is not None:
        sets = np.asarray(sets, dtype=bool)
        if sets.shape[0] != n:
            raise input_error("sets", f"shape {sets.shape}", f"({n}, K)", raw=True)
        rows = np.flatnonzero(labelled)
        n_set = int(rows.size)
        covered = int(sets[rows, expert[rows]].sum()) if n_set else 0
        cov_verdict, cov_p = verdict(covered, n_set, 1.0 - alpha, upper=False, test_level=test_level)
        notes.append(
            "coverage is measured on the cases experts labelled; the guarantee is for all cases, so a "
            "labelled sample chosen by priority (mostly review cases) under-states it"
        )
    else:
        cov_verdict, cov_p = "no guarantee made", None
    verdicts = [v for v in (risk_verdict, cov_verdict) if v not in ("no guarantee made", "no data")]
    held = None if not verdicts else all(v != "violated" for v in verdicts)
    return AuditResults(
        n_cases=n,
        n_auto=int(auto.sum()),
        n_labelled=int(labelled.sum()),
        n_unsure=int((expert == -2).sum()),
        n_auto_labelled=m,
        n_auto_errors=e,
        realised_risk=e / m if m else None,
        risk_interval=clopper_pearson_interval(e, m, level) if m else None,
        promised_risk=promised_risk,
        delta=delta,
        risk_verdict=risk_verdict,
        risk_p_value=risk_p,
        n_set_labelled=n_set,
        n_covered=covered,
        realised_coverage=covered / n_set if n_set else None,
        coverage_interval=clopper_pearson_interval(covered, n_set, level) if n_set else None,
        promised_coverage=None if alpha is None else 1.0 - alpha,
        coverage_verdict=cov_verdict,
        coverage_p_value=cov_p,
        level=level,
        test_level=test_level,
        held=held,
        notes=notes,
    )


class _Levels:
    """The two levels, checked with the house constraints."""

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 - read-only declaration
        "level": [Interval(float, 0.0, 1.0, closed="neither")],
        "test_level": [Interval(float, 0.0, 1.0, closed="neither")],
    }

    def __init__(self, level: float, test_level: float) -> None:
        self.level = level
        self.test_level = test_level
