"""The statistics of randomized smoothing, vectorised over pixels (pure numpy/scipy, no model).

- :func:`clopper_pearson_lower`: the one-sided Clopper–Pearson lower confidence bound of a
  binomial proportion (Cohen et al. 2019, ``LowerConfBound``);
- :func:`binomial_pvalue_greater`: the one-sided binomial test of ``H0: p <= tau`` that
  SegCertify (Fischer et al. 2021) runs in every pixel;
- :func:`binomial_pvalue_two_sided`: the two-sided test of ``p = 1/2`` behind Cohen's ``PREDICT``;
- :func:`adjust_pvalues` / :func:`reject`: Holm (step-down, default), Bonferroni and
  Benjamini–Hochberg over the last axis, several images at once;
- :func:`sequential_pvalues`: the alpha-spending running p-value of the sequential mode;
- :func:`reachable_threshold`, :func:`never_rejected`, :func:`futile`: when the sequential mode may
  stop (no pixel can still be certified, or none plausibly can: the futility rule);
- :func:`late_looks`: a look schedule that spends alpha only where certification is possible.

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
    "reachable_threshold",
    "never_rejected",
    "clopper_pearson_upper",
    "chance_to_reach",
    "futile",
    "late_looks",
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


def reachable_threshold(best: np.ndarray, alpha: float, method: str) -> float:
    """The loosest threshold the correction can still apply to any p-value when the p-values can
    only fall to ``best``: the fixed point described in :func:`never_rejected` (``-1`` when no
    hypothesis can be rejected at all, so that every p-value is above it).

    Parameters
    ----------
    best : float ndarray (m,), the smallest p-value each hypothesis can still reach
    alpha : level; method : one of :data:`CORRECTIONS`

    Returns
    -------
    float
    """
    check_choice("correction", method, CORRECTIONS)
    best = np.asarray(best, dtype=np.float64).reshape(-1)
    m = best.size
    if method == "bonferroni":
        return alpha / max(m, 1)
    # The fixed point of "r = number of hypotheses whose best p-value clears the threshold for r"
    # (the threshold grows with r), found at once: the largest r with count(threshold(r)) >= r.
    ordered = np.sort(best)
    r = np.arange(1, m + 1)
    thresholds = alpha / (m - r + 1) if method == "holm" else alpha * r / m
    clearing = np.searchsorted(ordered, thresholds, side="right")
    feasible = np.nonzero(clearing >= r)[0]
    return float(thresholds[feasible[-1]]) if feasible.size else -1.0


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
    best = np.asarray(best, dtype=np.float64)
    return best > reachable_threshold(best, alpha, method)


def clopper_pearson_upper(k: np.ndarray | int, n: int, level: float) -> np.ndarray:
    """One-sided (1 - level) Clopper–Pearson upper bound of p from k successes in n trials.

    ``Beta(1 - level; k + 1, n - k)`` quantile, 1 when ``k = n``.

    Parameters
    ----------
    k : int ndarray, any shape, values in ``[0, n]``
    n : trials, >= 1
    level : in (0, 1)

    Returns
    -------
    float64 ndarray, the shape of ``k``.
    """
    n = check_int("n", n, low=1)
    level = check_float("level", level, low=0.0, high=1.0, closed="neither")
    k = _counts(k, n)
    table = np.ones(n + 1)
    table[:-1] = sps.beta.ppf(1.0 - level, np.arange(n) + 1, n - np.arange(n))
    return table[k]


def chance_to_reach(
    hits: np.ndarray,
    seen: int,
    n_final: int,
    weight_final: float,
    threshold: float,
    tau: float,
    p: np.ndarray | float,
    *,
    offset: int = 0,
) -> np.ndarray:
    """The probability that a pixel's count reaches, at the last look, what it needs to be certified.

    The pixel needs the count ``k_req``: the smallest ``k`` with ``P(Bin(N, tau) >= k) /
    weight_final <= threshold`` (``N = offset + n_final``); it has ``hits`` among ``offset + seen``
    samples, and ``N - offset - seen`` remain, each a success with probability ``p``.

    Parameters
    ----------
    hits : int ndarray, any shape, successes so far
    seen, n_final : estimation samples so far and at the last look (``offset`` more are counted)
    weight_final : spending weight of the last look in (0, 1]
    threshold : the p-value the pixel needs at the last look (< 0: unreachable)
    tau : the null proportion
    p : float or float ndarray broadcast with ``hits``, the success probability assumed
    offset : selection samples counted in ``hits``

    Returns
    -------
    float64 ndarray, the shape of ``hits``: ``P(hits + Bin(remaining, p) >= k_req)``.
    """
    total, final = offset + seen, offset + n_final
    hits = _counts(hits, total)
    table = np.minimum(1.0, sps.binom.sf(np.arange(final + 1) - 1, final, tau) / weight_final)
    reachable = np.nonzero(table <= threshold)[0]
    if threshold < 0 or reachable.size == 0:
        return np.zeros(hits.shape)
    k_req = int(reachable[0])
    return np.asarray(sps.binom.sf(k_req - hits - 1, final - total, p), dtype=np.float64)


def futile(
    hits: np.ndarray,
    seen: int,
    n_final: int,
    weight_final: float,
    threshold: float,
    tau: float,
    beta: float,
    *,
    offset: int = 0,
) -> np.ndarray:
    """The sequential mode's futility rule: hypotheses that will not plausibly be rejected by the end.

    A pixel needs, at the last look (``n_final`` samples, spending weight ``weight_final``), a
    count ``k_req`` (see :func:`chance_to_reach`) for the loosest threshold the correction can
    still give (:func:`reachable_threshold`: optimistic, as if every still-reachable pixel were
    certified). Its probability of the selected class is at most the one-sided Clopper–Pearson
    upper bound ``p_U`` at level ``beta`` from the ``hits`` among ``seen`` samples. The pixel is
    futile when even at ``p_U`` the remaining samples reach ``k_req`` with probability below
    ``beta``.

    This is a *cost* budget, not part of the guarantee: stopping early is allowed whatever the
    reason (the running p-values are valid at any stopping time), and a futile pixel is simply
    not certified if it is not certified by then. A pixel that would have reached ``k_req`` is
    declared futile at one look with probability at most about ``2 beta`` (``p_U`` below the
    truth, or the upper tail at ``p_U``); the certified-Dice cost is measured in
    ``benchmarks/certification.md``.

    Parameters
    ----------
    hits : int ndarray, any shape, successes among ``offset + seen`` samples
    seen : estimation samples so far; n_final : at the last look
    weight_final : spending weight of the last look in (0, 1]
    threshold : the p-value the pixel needs at the last look; < 0 makes every pixel futile
    tau : the null proportion; beta : the futility budget in (0, 1)
    offset : samples counted in ``hits`` besides the estimation ones (selection passes reused)

    Returns
    -------
    bool ndarray, the shape of ``hits``.
    """
    beta = check_float("beta", beta, low=0.0, high=1.0, closed="neither")
    p_upper = clopper_pearson_upper(hits, offset + seen, beta)
    chance = chance_to_reach(hits, seen, n_final, weight_final, threshold, tau, p_upper, offset=offset)
    return chance < beta


def late_looks(n: int, m: int, alpha: float, tau: float, *, n_looks: int = 3, offset: int = 0) -> np.ndarray:
    """A look schedule for the sequential mode: the first look where a pixel could first be
    certified at all, then geometric steps to ``n``.

    The first look ``s_1`` is the smallest sample count at which a pixel whose selected class won
    every pass clears the strictest threshold ``alpha w / m`` (``w = 1 / n_looks``: Holm's first
    step, Bonferroni); looking earlier only spends alpha. The remaining looks are spaced
    geometrically between ``s_1`` and ``n``. Any increasing schedule keeps the guarantee.

    Parameters
    ----------
    n : estimation samples at most; m : pixels in the family (times the classes with reused selection)
    alpha, tau : the test's level and null proportion
    n_looks : looks at most (fewer when ``s_1`` is close to ``n``)
    offset : selection samples also counted (reused selection passes)

    Returns
    -------
    int64 ndarray, increasing, ending at ``n``.
    """
    n = check_int("n", n, low=1)
    n_looks = check_int("n_looks", n_looks, low=1)
    if n_looks == 1:
        return np.array([n], dtype=np.int64)
    need = np.log(alpha / (n_looks * max(m, 1))) / np.log(tau)  # tau^s <= alpha w / m
    first = int(np.clip(np.ceil(need) - offset, 1, n))
    looks = np.unique(np.round(np.geomspace(first, n, n_looks)).astype(np.int64))
    return np.maximum(looks, 1)


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
