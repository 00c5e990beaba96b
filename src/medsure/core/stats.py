"""NaN-aware mean and the percentile bootstrap (pure numpy)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import overload

import numpy as np

from medsure.validation import input_error

__all__ = ["nanmean", "undefined_as_none", "bootstrap_counts", "percentile_bootstrap"]


@overload
def nanmean(values: np.ndarray, axis: None = None) -> float: ...


@overload
def nanmean(values: np.ndarray, axis: int) -> np.ndarray: ...


def nanmean(values: np.ndarray, axis: int | None = None) -> float | np.ndarray:
    """Mean over the finite entries (NaN and ±inf are skipped as undefined).

    Parameters
    ----------
    values : float ndarray, any shape
    axis : None (all entries, returns a float) or the axis to average over

    Returns
    -------
    float, or ndarray with ``axis`` removed; NaN where no entry is finite (no warning).
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    count = finite.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(mean) if axis is None else mean


def undefined_as_none(value: float | np.floating) -> float | None:
    """``float(value)``, or None when it is NaN/inf: how an undefined number is written to JSON."""
    value = float(value)
    return value if np.isfinite(value) else None


def bootstrap_counts(n: int, n_boot: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Bootstrap multiplicities ``(n_boot, n)``: row b counts how often each case is drawn in resample b.

    Drawing in consecutive chunks from one generator gives the same rows as one draw, which
    :func:`percentile_bootstrap` uses to keep memory at ``chunk x n``.
    """
    if n < 1 or n_boot < 0:
        raise input_error("bootstrap", f"n={n} cases and n_boot={n_boot}", "n >= 1 and n_boot >= 0", raw=True)
    # default_rng passes a Generator through unchanged, so chunked calls continue one stream
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)


def percentile_bootstrap(
    statistic: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    n: int,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
    counts: np.ndarray | None = None,
    chunk: int = 250,
) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap intervals of one or more statistics of n cases (Efron & Tibshirani 1993).

    Parameters
    ----------
    statistic : maps integer case weights ``(B, n)`` (B resamples at once) to
        ``{name: values (B,)}``; a value that is undefined for a resample is NaN and dropped
    n : number of cases
    n_boot : number of resamples (ignored when ``counts`` is given)
    level : two-sided coverage, the interval is the ``(1-level)/2`` and ``(1+level)/2`` quantiles
    seed : seeds the resampling; the same seed gives the same resamples (paired comparisons)
    counts : precomputed multiplicities ``(n_boot, n)`` from :func:`bootstrap_counts`, or None
    chunk : resamples evaluated at once: memory stays ``O(chunk x n)``

    Returns
    -------
    ``{name: (lo, hi)}``, or ``{name: None}`` when no resample gave a finite value.
    """
    if not 0.0 < level < 1.0:
        raise input_error("level", level, "a value in (0, 1)")
    if counts is not None:
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[1] != n:
            raise input_error("counts", f"shape {counts.shape}", f"(n_boot, {n})", raw=True)
        pieces = [statistic(counts[i : i + chunk]) for i in range(0, counts.shape[0], chunk)]
    else:
        generator = np.random.default_rng(seed)
        pieces = [statistic(bootstrap_counts(n, min(chunk, n_boot - i), generator)) for i in range(0, n_boot, chunk)]
    if not pieces:
        return {}
    alpha = (1.0 - level) / 2.0
    out: dict[str, tuple[float, float] | None] = {}
    for name in pieces[0]:
        values = np.concatenate([np.asarray(piece[name], dtype=np.float64) for piece in pieces])
        values = values[np.isfinite(values)]
        if values.size == 0:
            out[name] = None
        else:
            lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
            out[name] = (float(lo), float(hi))
    return out
