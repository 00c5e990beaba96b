"""The statistics of randomized smoothing, vectorised over pixels (pure numpy/scipy, no model).

- :func:`clopper_pearson_lower`: the one-sided Clopper–Pearson lower confidence bound of a
  binomial proportion (Cohen et al. 2019, ``LowerConfBound``);
- :func:`binomial_pvalue_greater`: the one-sided binomial test of ``H0: p <= tau`` that
  SegCertify (Fischer et al. 2021) runs in every pixel;
- :func:`binomial_pvalue_two_sided`: the two-sided test of ``p = 1/2`` behind Cohen's ``PREDICT``;
- :func:`adjust_pvalues` / :func:`reject`: Holm (step-down, default), Bonferroni and
  Benjamini–Hochberg over the last axis, several images at once;
- :func:`sequential_pvalues`: the alpha-spending running p-value of the sequential mode.

Counts only take the values ``0..n``, so every p-value is looked up in a table of ``n + 1``
entries computed once: the cost per pixel is an index, whatever the image size.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from medsure.validation import check_choice, check_float, check_int, input_error

__all__ = [
    "CORRECTIONS",
    "clopper_pearson_lower",
    "binomial_pvalue_greater",
    "binomial_pvalue_two_sided",
    "adjust_pvalues",
    "reject",
    "loosest_threshold",
    "never_rejected",
    "spending_weights",
    "sequential_pvalues",
]

#: multiple-testing corrections across pixels; "holm" controls the family-wise error (default),
#: "bonferroni" too (less power), "bh" controls the false-discovery rate (Benjamini–Hochberg).
CORRECTIONS = ("holm", "bonferroni", "bh")


def _counts(k: np.ndarray | int, n: int) -> np.ndarray:
    k = np.asarray(k)
    if k.dtype.kind not in "iu":
        raise input_error("counts", f"dtype {k.dtype}", "integer counts", raw=True)
    if k.size and (k.min() < 0 or k.max() > n):
        raise input_error("counts", f"values in [{k.min()}, {k.max()}]", f"counts in [0, {n}]", raw=True)
    return k.astype(np.int64, copy=False)


def clopper_pearson_lower(k: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper–Pearson lower bound of p from k successes in n trials.

    ``Beta(alpha; k, n - k + 1)`` quantile, 0 when ``k = 0`` (Clopper & Pearson 1934).

    Parameters
    ----------
    k : int ndarray, any shape, values in ``[0, n]``
    n : trials, >= 1
    alpha : level in (0, 1)

    Returns
    -------
    float64 ndarray, the shape of ``k``.
    """
    n = check_int("n", n, low=1)
    alpha = check_float("alpha", alpha, low=0.0, high=1.0, closed="neither")
    k = _counts(k, n)
    table = np.zeros(n + 1)
    table[1:] = sps.beta.ppf(alpha, np.arange(1, n + 1), n - np.arange(1, n + 1) + 1)
    return table[k]


def binomial_pvalue_greater(k: np.ndarray | int, n: int, tau: float) -> np.ndarray:
    """p-value of the one-sided test ``H0: p <= tau`` against ``p > tau``: ``P(Bin(n, tau) >= k)``.

    Parameters
    ----------
    k : int ndarray, any shape, values in ``[0, n]``
    n : trials, >= 1
    tau : the null proportion in (0, 1)

    Returns
    -------
    float64 ndarray, the shape of ``k``.
    """
    n = check_int("n", n, low=1)
    tau = check_float("tau", tau, low=0.0, high=1.0, closed="neither")
    k = _counts(k, n)
    table = sps.binom.sf(np.arange(n + 1) - 1, n, tau)  # P(X >= k) = P(X > k - 1)
    return np.minimum(table, 1.0)[k]


def binomial_pvalue_two_sided(k: np.ndarray | int, n: np.ndarray | int) -> np.ndarray:
    """Two-sided binomial test of ``p = 1/2`` (Cohen's PREDICT compares the top two counts).

    For ``p = 1/2`` the distribution is symmetric, so the p-value is
    ``min(1, 2 P(X <= min(k, n - k)))``, equal to ``scipy.stats.binomtest(k, n, 0.5).pvalue``.

    Parameters
    ----------
    k : int ndarray, successes
    n : int ndarray (broadcast with ``k``) of trials, ``0 <= k <= n``; n = 0 gives 1

    Returns
    -------
    float64 ndarray.
    """
    k, n = np.broadcast_arrays(np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64))
    if k.size and (np.any(k < 0) or np.any(k > n)):
        raise input_error("counts", "k outside [0, n]", "0 <= k <= n", raw=True)
    tail = sps.binom.cdf(np.minimum(k, n - k), n, 0.5)
    return np.where(n > 0, np.minimum(1.0, 2.0 * tail), 1.0)


def adjust_pvalues(pvalues: np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjusted p-values over the last axis (each row one family, e.g. the pixels of one image).

    Holm: ``max_{j<=i} min(1, (m - j) p_(j))``; Bonferroni: ``min(1, m p)``; Benjamini–Hochberg:
    ``min_{j>=i} min(1, m p_(j) / j)`` (1-based ranks), as statsmodels' ``multipletests``.

    Parameters
    ----------
    pvalues : float ndarray (..., m)
    method : one of :data:`CORRECTIONS`

    Returns
    -------
    float64 ndarray (..., m), in the input's order.
    """
    check_choice("correction", method, CORRECTIONS)
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim == 0:
        raise input_error("pvalues", "a scalar", "an array whose last axis holds the family", raw=True)
    m = p.shape[-1]
    if m == 0:
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, m * p)
    order = np.argsort(p, axis=-1, kind="stable")
    sorted_p = np.take_along_axis(p, order, axis=-1)
    ranks = np.arange(1, m + 1, dtype=np.float64)
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - ranks + 1) * sorted_p), axis=-1)
    else:  # bh: step-up, the running minimum taken from the largest p-value down
        scaled = np.minimum(1.0, sorted_p * m / ranks)
        adjusted = np.flip(np.minimum.accumulate(np.flip(scaled, axis=-1), axis=-1), axis=-1)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def reject(pvalues: np.ndarray, alpha: float, method: str = "holm") -> np.ndarray:
    """Which hypotheses are rejected at level ``alpha`` after the correction (last axis = family).

    Returns
    -------
    bool ndarray, the shape of ``pvalues``.
    """
    alpha = check_float("alpha", alpha, low=0.0, high=1.0, closed="neither")
    return adjust_pvalues(pvalues, method) <= alpha


def loosest_threshold(alpha: float, m: int, method: str) -> float:
    """The largest raw p-value that the correction can ever reject in a family of ``m``: ``alpha``
    for Holm and BH (their last step), ``alpha / m`` for Bonferroni. A pixel whose best reachable
    p-value stays above it can never be certified (the sequential mode's futility rule)."""
    check_choice("correction", method, CORRECTIONS)
    return alpha / max(m, 1) if method == "bonferroni" else alpha


def never_rejected(best: np.ndarray, alpha: float, method: str) -> np.ndarray:
    """Which hypotheses the correction can never reject when their p-values stay >= ``best``.

    A pixel is futile when its best reachable p-value exceeds the largest threshold the
    correction could apply to it. That threshold shrinks with the number ``r`` of pixels that can
    still be rejected at all: Holm rejects only p-values <= ``alpha / (m - r + 1)``, BH only
    p-values <= ``alpha r / m``, Bonferroni ``alpha / m``. Removing the futile pixels from
    ``r = m`` until nothing changes (each step only uses the futility already proven) ends at the
    largest ``r`` whose threshold at least ``r`` best p-values clear; that ``r`` is computed
    directly from the sorted p-values.

    Parameters
    ----------
    best : float ndarray (m,), the smallest p-value each hypothesis can still reach
    alpha : level; method : one of :data:`CORRECTIONS`

    Returns
    -------
    bool ndarray (m,).
    """
    check_choice("correction", method, CORRECTIONS)
    best = np.asarray(best, dtype=np.float64)
    m = best.size
    if method == "bonferroni":
        return best > alpha / max(m, 1)
    # The fixed point of "r = number of hypotheses whose best p-value clears the threshold for r"
    # (the threshold grows with r), found at once: the largest r with count(threshold(r)) >= r.
    ordered = np.sort(best)
    r = np.arange(1, m + 1)
    thresholds = alpha / (m - r + 1) if method == "holm" else alpha * r / m
    clearing = np.searchsorted(ordered, thresholds, side="right")
    feasible = np.nonzero(clearing >= r)[0]
    if feasible.size == 0:
        return np.ones(m, dtype=bool)
    return best > thresholds[feasible[-1]]


def spending_weights(looks: np.ndarray) -> np.ndarray:
    """Alpha-spending weights of the looks of the sequential mode: uniform, ``1 / K`` each.

    Any weights summing to 1 keep the guarantee (see :func:`sequential_pvalues`); uniform ones
    cost a factor K on every p-value, which is small next to the 1/m of the pixel correction.
    """
    looks = np.asarray(looks)
    return np.full(looks.shape, 1.0 / max(looks.size, 1))


def sequential_pvalues(previous: np.ndarray, k: np.ndarray, n_look: int, weight: float, tau: float) -> np.ndarray:
    """The running p-value after one more look: ``min(previous, p(k, n_look) / weight)``, capped at 1.

    Why it is valid (anytime): with looks ``n_1 < ... < n_K`` and weights ``w_j`` summing to 1,
    ``P_i = min_j p_ij / w_j`` satisfies ``P(P_i <= u) <= sum_j P(p_ij <= u w_j) <= u`` under the
    pixel's null hypothesis by the union bound, whatever the dependence between looks. So ``P_i``
    is a valid p-value however the sampling stopped, and Holm/BH/Bonferroni over the pixels keep
    their error control.

    Parameters
    ----------
    previous : float ndarray (..., m), the running p-value before this look (ones at the start)
    k : int ndarray (..., m), successes among the first ``n_look`` samples
    n_look : samples seen so far
    weight : this look's share of alpha, in (0, 1]
    tau : the null proportion

    Returns
    -------
    float64 ndarray (..., m).
    """
    p = binomial_pvalue_greater(k, n_look, tau)
    return np.minimum(np.asarray(previous, dtype=np.float64), np.minimum(1.0, p / weight))
