"""The split-conformal quantile and the exact finite-sample law of its coverage (pure functions).

With ``n`` calibration scores and level ``alpha`` the threshold is the ``k``-th smallest score,

    k = ceil((n + 1) (1 - alpha)) = n + 1 - l,   l = floor((n + 1) alpha),

which exists only when ``l >= 1``, i.e. ``n >= 1/alpha - 1``. For exchangeable data and scores
without ties, the coverage of a fresh test point *given the calibration set* is
``Beta(n + 1 - l, l)`` (Vovk 2012; Angelopoulos & Bates 2021, "A Gentle Introduction to Conformal
Prediction", Sec. 3.2), whose mean ``(n + 1 - l)/(n + 1)`` lies in ``[1 - alpha, 1 - alpha + 1/(n+1))``.
The empirical coverage on ``m`` test points is then ``BetaBinomial(m, n + 1 - l, l) / m``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from medsure.errors import MedsureInputError

# (n + 1) * alpha is computed in floating point; this slack keeps e.g. 1000 * 0.1 = 100 exact.
_FLOOR_SLACK = 1e-9


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as float or raise unless ``0 < alpha < 1``."""
    try:
        alpha = float(alpha)
    except (TypeError, ValueError) as exc:
        raise MedsureInputError(f"alpha={alpha!r} is not a number; expected 0 < alpha < 1") from exc
    if not (0.0 < alpha < 1.0) or not math.isfinite(alpha):
        raise MedsureInputError(f"alpha={alpha} is outside (0, 1); e.g. alpha=0.1 asks for 90% coverage")
    return alpha


def n_excluded(n: int, alpha: float) -> int:
    """``l = floor((n + 1) alpha)``: how many calibration scores lie above the threshold."""
    return int(math.floor((n + 1) * alpha + _FLOOR_SLACK))


def min_calibration_size(alpha: float) -> int:
    """Smallest ``n`` with ``floor((n + 1) alpha) >= 1``, i.e. ``ceil(1/alpha) - 1``."""
    alpha = check_alpha(alpha)
    n = max(0, math.ceil(1.0 / alpha - _FLOOR_SLACK) - 1)
    while n_excluded(n, alpha) < 1:  # guard against rounding in 1/alpha
        n += 1
    return n


def quantile_rank(n: int, alpha: float, what: str = "calibration set") -> int:
    """The 1-based rank ``k = n + 1 - floor((n + 1) alpha)`` of the conformal threshold.

    Raises
    ------
    MedsureInputError
        When ``alpha < 1/(n + 1)``: the threshold would be infinite. The message says how many
        calibration samples this ``alpha`` needs.
    """
    alpha = check_alpha(alpha)
    l = n_excluded(n, alpha)
    if l < 1:
        need = min_calibration_size(alpha)
        raise MedsureInputError(
            f"{what} has {n} samples, too few for alpha={alpha:g}: split conformal needs "
            f"n >= 1/alpha - 1 = {need} samples (or alpha >= 1/(n+1) = {1.0 / (n + 1):.4g})"
        )
    return n + 1 - l


def conformal_quantile(scores: np.ndarray, alpha: float, what: str = "calibration set") -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest score (split-conformal threshold).

    Parameters
    ----------
    scores : ndarray (n,)
        Calibration non-conformity scores (higher = less conforming). Not modified.
    alpha : float in (0, 1)
        Miscoverage level.
    what : str
        Name used in the error message (e.g. ``"class 'benign'"``).

    Returns
    -------
    float

    Raises
    ------
    MedsureInputError
        ``alpha`` outside (0, 1), non-finite scores, or ``alpha < 1/(n + 1)``.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not np.all(np.isfinite(scores)):
        raise MedsureInputError(f"{what}: conformity scores contain NaN or inf")
    k = quantile_rank(scores.size, alpha, what)
    return float(np.partition(scores, k - 1)[k - 1])


def conformal_quantile_of_counts(
    values: np.ndarray, counts: np.ndarray, alpha: float, what: str = "calibration set"
) -> float:
    """:func:`conformal_quantile` for scores that take few values, given as counts.

    The same ``ceil((n + 1)(1 - alpha))``-th smallest score (:func:`quantile_rank`), found by
    counting: for scores with a handful of distinct values (Top-K ranks) a partition of ``n``
    heavily tied values is many times slower than a cumulative sum over the values.

    Parameters
    ----------
    values : ndarray (V,)
        Score values, non-decreasing.
    counts : ndarray of int (V,)
        How many calibration scores equal each value.
    alpha, what
        As in :func:`conformal_quantile`.

    Returns
    -------
    float
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise MedsureInputError(f"{what}: conformity scores contain NaN or inf")
    cumulative = np.cumsum(counts)
    k = quantile_rank(int(cumulative[-1]) if cumulative.size else 0, alpha, what)
    return float(values[int(np.searchsorted(cumulative, k))])


# ---- the coverage law ---------------------------------------------------------------------


def coverage_beta_params(n: int, alpha: float) -> tuple[int, int]:
    """``(a, b) = (n + 1 - l, l)``: coverage given the calibration set is ``Beta(a, b)``."""
    k = quantile_rank(n, alpha)
    return k, n + 1 - k


def expected_coverage(n: int, alpha: float) -> float:
    """Mean coverage ``(n + 1 - l) / (n + 1)`` of split conformal without score ties."""
    a, b = coverage_beta_params(n, alpha)
    return a / (a + b)


def coverage_pmf(n_cal: int, n_test: int, alpha: float) -> np.ndarray:
    """PMF over ``0..n_test`` of the number of covered test points: ``BetaBinomial(m, a, b)``."""
    a, b = coverage_beta_params(n_cal, alpha)
    return stats.betabinom.pmf(np.arange(n_test + 1), n_test, a, b)


def coverage_band(
    n_cal: int | np.ndarray, alpha: float, n_test: int | np.ndarray | None = None, delta: float = 0.01
) -> tuple[float, float]:
    """Central ``1 - delta`` interval of split-conformal coverage.

    Parameters
    ----------
    n_cal : int, or ndarray (S,) of ints
        Calibration size; an array gives one calibration set per stratum (class- or
        group-conditional conformal: one independent threshold per stratum).
    alpha : float
    n_test : int, ndarray (S,) of ints, or None
        None: band of the *true* coverage given the calibration set, ``Beta(a, b)`` quantiles.
        Otherwise: band of the *empirical* coverage on that many test points (per stratum), the
        exact distribution of the covered count — ``BetaBinomial(m, a, b)``, and for strata the
        convolution of the per-stratum beta-binomials (the thresholds use disjoint calibration
        data, so the counts are independent). This is the band to compare an observed test
        coverage with: it includes both the calibration draw and the finite test sample.
    delta : float in (0, 1)
        Probability mass outside the band (``delta / 2`` on each side).

    Returns
    -------
    (low, high) : tuple of float
        The coverage of a correct pipeline on exchangeable data without score ties falls outside
        ``[low, high]`` with probability at most ``delta`` (the band is made of whole counts, so the
        mass inside is at least ``1 - delta``). Ties in the scores (e.g. Top-K, deterministic APS)
        only push coverage *up*, so ``low`` holds for every method.
    """
    if not 0.0 < delta < 1.0:
        raise MedsureInputError(f"delta={delta} is outside (0, 1)")
    n_cal_arr = np.atleast_1d(np.asarray(n_cal, dtype=np.int64))
    if n_test is None:
        if n_cal_arr.size != 1:
            raise MedsureInputError("a band for several strata needs n_test per stratum")
        a, b = coverage_beta_params(int(n_cal_arr[0]), alpha)
        low, high = stats.beta.ppf([delta / 2, 1 - delta / 2], a, b)
        return float(low), float(high)
    n_test_arr = np.atleast_1d(np.asarray(n_test, dtype=np.int64))
    if n_test_arr.shape != n_cal_arr.shape:
        raise MedsureInputError(f"n_cal has {n_cal_arr.size} strata but n_test has {n_test_arr.size}")
    total = int(n_test_arr.sum())
    if total == 0:
        raise MedsureInputError("the test set is empty; no coverage band")
    pmf = np.ones(1)
    for nc, nt in zip(n_cal_arr.tolist(), n_test_arr.tolist()):
        if nt == 0:
            continue
        pmf = _convolve(pmf, coverage_pmf(nc, nt, alpha))
    cdf = np.cumsum(pmf)
    cdf /= cdf[-1]
    low = int(np.searchsorted(cdf, delta / 2 - 1e-12))  # smallest c with P(X <= c) >= delta/2
    high = int(np.searchsorted(cdf, 1 - delta / 2 - 1e-12))
    return low / total, min(high, total) / total


def _convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.size * b.size <= 4_000_000:
        return np.convolve(a, b)
    from scipy.signal import fftconvolve

    return np.clip(fftconvolve(a, b), 0.0, None)
