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

import numpy as np
from scipy import stats

from medsure.validation import check_alpha, check_float, input_error, min_calibration_size, n_excluded

__all__ = [
    "check_alpha",
    "n_excluded",
    "min_calibration_size",
    "quantile_rank",
    "conformal_quantile",
    "conformal_quantile_of_counts",
    "coverage_beta_params",
    "expected_coverage",
    "coverage_pmf",
    "coverage_band",
]


def quantile_rank(n: int, alpha: float, what: str = "the calibration set") -> int:
    """The 1-based rank ``k = n + 1 - floor((n + 1) alpha)`` of the conformal threshold.

    Raises
    ------
    MedsureInputError
        When ``alpha < 1/(n + 1)``: the threshold would be infinite. The message says how many
        calibration samples this ``alpha`` needs.
    """
    alpha = check_alpha(alpha, n, where=what)  # the one message for alpha < 1/(n+1), with the n needed
    return n + 1 - n_excluded(n, alpha)


def conformal_quantile(scores: np.ndarray, alpha: float, what: str = "the calibration set") -> float:
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
        raise input_error(f"conformity scores ({what})", _non_finite(scores), "finite scores", raw=True)
    k = quantile_rank(scores.size, alpha, what)
    return float(np.partition(scores, k - 1)[k - 1])


def conformal_quantile_of_counts(
    values: np.ndarray, counts: np.ndarray, alpha: float, what: str = "the calibration set"
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
        raise input_error(f"conformity scores ({what})", _non_finite(values), "finite scores", raw=True)
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
    check_float("delta", delta, low=0.0, high=1.0, closed="neither")
    n_cal_arr = np.atleast_1d(np.asarray(n_cal, dtype=np.int64))
    if n_test is None:
        if n_cal_arr.size != 1:
            raise input_error(
                "n_test", None, f"a test size per stratum ({n_cal_arr.size} strata)", "a band for strata needs n_test"
            )
        a, b = coverage_beta_params(int(n_cal_arr[0]), alpha)
        low, high = stats.beta.ppf([delta / 2, 1 - delta / 2], a, b)
        return float(low), float(high)
    n_test_arr = np.atleast_1d(np.asarray(n_test, dtype=np.int64))
    if n_test_arr.shape != n_cal_arr.shape:
        raise input_error(
            "n_test", f"{n_test_arr.size} strata", f"{n_cal_arr.size} (one test size per stratum of n_cal)", raw=True
        )
    total = int(n_test_arr.sum())
    if total == 0:
        raise input_error("test set", "0 samples", "at least 1 sample for a coverage band", raw=True)
    strata = [(nc, nt) for nc, nt in zip(n_cal_arr.tolist(), n_test_arr.tolist(), strict=True) if nt > 0]
    if len(strata) == 1:  # one beta-binomial: its quantiles without holding the m + 1 pmf values
        low, high = _betabinom_band(*coverage_beta_params(strata[0][0], alpha), total, delta)
        return low / total, min(high, total) / total
    pmf = np.ones(1)
    for nc, nt in zip(n_cal_arr.tolist(), n_test_arr.tolist(), strict=True):
        if nt == 0:
            continue
        pmf = _convolve(pmf, coverage_pmf(nc, nt, alpha))
    cdf = np.cumsum(pmf)
    cdf /= cdf[-1]
    low = int(np.searchsorted(cdf, delta / 2 - 1e-12))  # smallest c with P(X <= c) >= delta/2
    high = int(np.searchsorted(cdf, 1 - delta / 2 - 1e-12))
    return low / total, min(high, total) / total


_BAND_CHUNK = 1 << 18  # pmf values per chunk in _betabinom_band: 2 MB, whatever m


def _betabinom_band(a: int, b: int, m: int, delta: float) -> tuple[int, int]:
    """``(low, high)`` counts of :func:`coverage_band` for one ``BetaBinomial(m, a, b)``.

    The same numbers as materialising the pmf over ``0..m``, taking its cumulative sum,
    dividing by the last entry and searching the ``delta / 2`` and ``1 - delta / 2`` levels, but
    in chunks of :data:`_BAND_CHUNK` counts: memory is O(chunk) instead of O(m) (about 0.5 GB of
    pmf and temporaries at m = 10^7). ``np.cumsum`` adds sequentially, so carrying the running
    sum into each chunk reproduces the whole-array cumulative sums bit for bit. One pass finds
    the total and the running sum at every chunk end; the two chunks holding the crossings are
    then evaluated again to locate them exactly.
    """
    starts = list(range(0, m + 1, _BAND_CHUNK))

    def cumulative(start: int, carry: float) -> np.ndarray:
        pmf = stats.betabinom.pmf(np.arange(start, min(start + _BAND_CHUNK, m + 1)), m, a, b)
        pmf[0] += carry
        return np.cumsum(pmf)

    ends = np.empty(len(starts))  # running sum up to the end of each chunk
    carry = 0.0
    for i, start in enumerate(starts):
        carry = float(cumulative(start, carry)[-1])
        ends[i] = carry
    total = carry
    found = []
    for level in (delta / 2 - 1e-12, 1 - delta / 2 - 1e-12):
        # the first chunk whose normalised end reaches the level holds the first count that does
        i = int(np.searchsorted(ends / total, level))
        if i >= len(starts):
            found.append(m + 1)  # as searchsorted past the end of the whole cdf
            continue
        cdf = cumulative(starts[i], float(ends[i - 1]) if i > 0 else 0.0) / total
        found.append(starts[i] + int(np.searchsorted(cdf, level)))
    return found[0], found[1]


def _non_finite(values: np.ndarray) -> str:
    return f"{int(values.size - np.count_nonzero(np.isfinite(values)))} NaN or infinite value(s)"


def _convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.size * b.size <= 4_000_000:
        return np.convolve(a, b)
    from scipy.signal import fftconvolve

    return np.clip(fftconvolve(a, b), 0.0, None)
