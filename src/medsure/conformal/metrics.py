"""Metrics of prediction sets and the validity check against the exact coverage band (pure).

All functions take a boolean set matrix ``sets`` ``(N, K)`` and true ``labels`` ``(N,)``.
Undefined values (e.g. the coverage of a class absent from the test set) are ``None`` in the
returned dicts, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medsure.conformal.quantile import coverage_band, expected_coverage
from medsure.validation import input_error

#: Probability mass outside the reported coverage band (0.5% on each side).
DEFAULT_DELTA = 0.01


def _check(sets: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sets = np.asarray(sets)
    labels = np.asarray(labels)
    if sets.ndim != 2 or sets.dtype != bool:
        raise input_error("sets", f"shape {sets.shape}, dtype {sets.dtype}", "boolean sets (N, K)", raw=True)
    if labels.shape != (sets.shape[0],):
        raise input_error("labels", f"shape {labels.shape}", f"({sets.shape[0]},): one per set", raw=True)
    if labels.size and (labels.min() < 0 or labels.max() >= sets.shape[1]):
        raise input_error(
            "labels", f"labels in [{labels.min()}, {labels.max()}]", f"labels in [0, {sets.shape[1]})", raw=True
        )
    return sets, labels.astype(np.int64)


def covered(sets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Boolean ``(N,)``: is the true label in the set."""
    sets, labels = _check(sets, labels)
    return sets[np.arange(labels.size), labels]


def coverage(sets: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose set contains the true label."""
    hit = covered(sets, labels)
    if hit.size == 0:
        raise input_error("sets", "0 samples", "at least 1 sample (coverage is undefined without)", raw=True)
    return float(hit.mean())


def set_sizes(sets: np.ndarray) -> np.ndarray:
    """Number of labels per set, int ``(N,)``."""
    return np.asarray(sets).sum(axis=1)


def per_class_coverage(sets: np.ndarray, labels: np.ndarray) -> list[float | None]:
    """Coverage among samples of each true class (None for a class with no samples), length K."""
    hit = covered(sets, labels)
    k = sets.shape[1]
    n_c = np.bincount(labels, minlength=k)
    hits_c = np.bincount(labels, weights=hit, minlength=k)
    return [float(h / c) if c else None for h, c in zip(hits_c, n_c, strict=True)]


def per_class_size(sets: np.ndarray, labels: np.ndarray) -> list[float | None]:
    """Mean set size among samples of each true class (None when absent), length K."""
    sets, labels = _check(sets, labels)
    k = sets.shape[1]
    n_c = np.bincount(labels, minlength=k)
    size_c = np.bincount(labels, weights=set_sizes(sets), minlength=k)
    return [float(s / c) if c else None for s, c in zip(size_c, n_c, strict=True)]


def size_stratified_coverage(sets: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """Coverage by set size (Angelopoulos & Bates 2021, Sec. 3): one row per size that occurs."""
    hit = covered(sets, labels)
    sizes = set_sizes(sets)
    rows = []
    for s in np.unique(sizes):
        mask = sizes == s
        rows.append({"size": int(s), "count": int(mask.sum()), "coverage": float(hit[mask].mean())})
    return rows


def coverage_gap(sets: np.ndarray, labels: np.ndarray, alpha: float) -> float:
    """Class-conditional coverage gap: mean over present classes of ``|coverage_c - (1 - alpha)|``
    (Ding et al. 2023, "Class-conditional conformal prediction with many classes")."""
    values = [c for c in per_class_coverage(sets, labels) if c is not None]
    return float(np.mean(np.abs(np.asarray(values) - (1 - alpha))))


def set_metrics(sets: np.ndarray, labels: np.ndarray, alpha: float) -> dict[str, Any]:
    """Every set metric in one JSON-ready dict.

    Returns
    -------
    dict with ``n``, ``coverage``, ``mean_set_size``, ``median_set_size``, ``size_histogram``
    (counts of sizes 0..K), ``empty_rate``, ``singleton_rate``, ``full_rate`` (all K labels),
    ``per_class_coverage``, ``per_class_size``, ``per_class_count``, ``worst_class_coverage``,
    ``size_stratified_coverage``, ``coverage_gap``.
    """
    sets, labels = _check(sets, labels)
    k = sets.shape[1]
    sizes = set_sizes(sets)
    pcc = per_class_coverage(sets, labels)
    present = [c for c in pcc if c is not None]
    return {
        "n": int(labels.size),
        "coverage": coverage(sets, labels),
        "mean_set_size": float(sizes.mean()),
        "median_set_size": float(np.median(sizes)),
        "size_histogram": np.bincount(sizes, minlength=k + 1).tolist(),
        "empty_rate": float(np.mean(sizes == 0)),
        "singleton_rate": float(np.mean(sizes == 1)),
        "full_rate": float(np.mean(sizes == k)),
        "per_class_coverage": pcc,
        "per_class_size": per_class_size(sets, labels),
        "per_class_count": np.bincount(labels, minlength=k).tolist(),
        "worst_class_coverage": float(min(present)) if present else None,
        "size_stratified_coverage": size_stratified_coverage(sets, labels),
        "coverage_gap": coverage_gap(sets, labels, alpha),
    }


def class_overlap(sets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``M[i, j]``: fraction of samples of true class ``i`` whose set contains class ``j``
    (NaN-free: rows of absent classes are 0). The diagonal is the per-class coverage."""
    sets, labels = _check(sets, labels)
    k = sets.shape[1]
    counts = np.zeros((k, k))
    np.add.at(counts, labels, sets.astype(np.float64))
    n_c = np.bincount(labels, minlength=k)
    return np.divide(counts, n_c[:, None], out=np.zeros_like(counts), where=n_c[:, None] > 0)


# ---- validity ----------------------------------------------------------------------------


def validity(
    coverage_value: float,
    alpha: float,
    n_cal: int | Sequence[int],
    n_test: int | Sequence[int],
    *,
    exact: bool,
    delta: float = DEFAULT_DELTA,
) -> dict[str, Any]:
    """Compare an observed test coverage with the exact band of a correct split-conformal run.

    Parameters
    ----------
    coverage_value : float
        Observed coverage on the test set.
    alpha : float
    n_cal, n_test : int or sequence of int
        Calibration / test sizes (one per stratum for class- or group-conditional runs).
    exact : bool
        Whether the score is tie-free (LAC and randomized scores), so coverage should also stay
        *below* the upper end. Deterministic APS/RAPS/SAPS and Top-K have tied scores and are
        expected to over-cover; for them only the lower end is a validity condition.
    delta : float
        Mass outside the band.

    Returns
    -------
    dict with ``coverage_band`` ``[low, high]``, ``band_delta``, ``expected_coverage`` (marginal
    only), ``band_status`` ("inside", "below", "above"), ``valid`` (bool) and ``band_note``.

    Notes
    -----
    The band is the central ``1 - delta`` interval of the covered count on ``n_test`` points, which
    is BetaBinomial(n_test, n+1-l, l) for one stratum and the convolution of these for several
    (:func:`medsure.conformal.quantile.coverage_band`). It therefore accounts for both the
    randomness of the calibration set and the finite test set. ``valid`` is False when coverage is
    below the band (the guarantee looks broken: exchangeability violated, e.g. shift between
    calibration and test data, or a bug) or, for exact scores, above it.
    """
    low, high = coverage_band(np.asarray(n_cal), alpha, np.asarray(n_test), delta)
    if coverage_value < low:
        status = "below"
        note = (
            f"coverage {coverage_value:.4f} is BELOW the {100 * (1 - delta):g}% band "
            f"[{low:.4f}, {high:.4f}] of a correct split-conformal run: calibration and test data "
            "are probably not exchangeable (distribution shift, different source) or the "
            "calibration set is not independent of the model"
        )
    elif coverage_value > high:
        status = "above"
        note = f"coverage {coverage_value:.4f} is ABOVE the band [{low:.4f}, {high:.4f}]: " + (
            "expected for this score (tied scores make it conservative); sets are larger than the target needs"
            if not exact
            else "unexpected for a tie-free score: check for duplicate samples or a test set "
            "easier than the calibration set"
        )
    else:
        status = "inside"
        note = f"coverage {coverage_value:.4f} is inside the band [{low:.4f}, {high:.4f}]"
    valid = status == "inside" or (status == "above" and not exact)
    out = {
        "coverage_band": [low, high],
        "band_delta": delta,
        "band_status": status,
        "valid": bool(valid),
        "band_note": note,
        "exact_band": bool(exact),
    }
    if np.ndim(n_cal) == 0:
        out["expected_coverage"] = expected_coverage(int(np.asarray(n_cal)), alpha)
    return out


def stratified_validity(
    hit: np.ndarray,
    test_strata: np.ndarray,
    names: Sequence[str],
    cal_counts: Sequence[int],
    modes: Sequence[str | None],
    alpha: float,
    *,
    n_cal_marginal: int,
    exact: bool,
    delta: float = DEFAULT_DELTA,
    kind: str = "class",
) -> dict[str, Any]:
    """Validity of a class- or group-conditional run: every stratum against its own band, and
    the overall coverage against the convolution of the per-stratum laws.

    Parameters
    ----------
    hit : ndarray of bool (N,)
        Whether each test sample's set contains its label.
    test_strata : ndarray of int (N,)
        Stratum index of each test sample in ``names``.
    names : sequence of str (S,)
    cal_counts : sequence of int (S,)
        Calibration samples per stratum (0 for a stratum without calibration samples).
    modes : sequence (S,) of None, "marginal" or "include"
        The fallback a stratum used (None: its own threshold).
    alpha : float
    n_cal_marginal : int
        Calibration size of the marginal threshold (for "marginal" fallbacks).
    exact : bool
        Tie-free score (see :func:`validity`).
    delta : float
        Overall mass outside the band; each stratum is tested at ``delta / (number tested)``
        (Bonferroni), so a correct run is flagged with probability at most ``delta``.
    kind : str
        "class" or "group", for the note.

    Returns
    -------
    dict with ``per_stratum`` (rows ``stratum, n_cal, n_test, fallback, coverage`` and, for strata
    with their own threshold, the :func:`validity` keys), ``coverage_band``, ``band_delta``,
    ``band_status``, ``valid``, ``exact_band``, ``band_note``.
    """
    hit = np.asarray(hit, dtype=bool)
    test_strata = np.asarray(test_strata)
    n_test_of = np.bincount(test_strata, minlength=len(names))
    hits_of = np.bincount(test_strata, weights=hit, minlength=len(names))
    n_tested = sum(1 for s in range(len(names)) if n_test_of[s] and modes[s] is None)
    stratum_delta = delta / max(n_tested, 1)
    rows, band_cal, band_test, always = [], [], [], 0
    for s, name in enumerate(names):
        m, mode = int(n_test_of[s]), modes[s]
        row: dict[str, Any] = {
            "stratum": name,
            "n_cal": int(cal_counts[s]),
            "n_test": m,
            "fallback": mode,
            "coverage": float(hits_of[s] / m) if m else None,
        }
        if m and mode is None:
            row.update(validity(row["coverage"], alpha, int(cal_counts[s]), m, exact=exact, delta=stratum_delta))
            band_cal.append(int(cal_counts[s]))
            band_test.append(m)
        elif m and mode == "marginal":
            band_cal.append(n_cal_marginal)
            band_test.append(m)
        elif m:
            always += m
        rows.append(row)
    n_test = hit.size
    if band_test:
        low, high = coverage_band(np.array(band_cal), alpha, np.array(band_test), delta)
        covered_part = sum(band_test)
        low = (low * covered_part + always) / n_test
        high = (high * covered_part + always) / n_test
    else:
        low = high = 1.0
    cov = float(hit.mean())
    status = "below" if cov < low else "above" if cov > high else "inside"
    valid = status == "inside" or (status == "above" and not exact)
    return {
        "per_stratum": rows,
        "coverage_band": [low, high],
        "band_delta": delta,
        "band_status": status,
        "valid": bool(valid and all(r.get("valid", True) for r in rows)),
        "exact_band": bool(exact),
        "band_note": (
            f"overall coverage {cov:.4f} vs band [{low:.4f}, {high:.4f}] "
            f"(convolution of the per-{kind} beta-binomial laws); "
            f"{sum(1 for r in rows if r.get('valid') is False)} stratum/strata outside "
            f"their own band (each at delta/{max(n_tested, 1)}, Bonferroni)"
        ),
    }
