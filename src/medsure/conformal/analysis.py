"""Conformal analyses: one run's full evaluation, calibration-size study, confidence sweep, method
comparison, class-overlap matrix and hardest cases. Each returns a JSON-ready dict (no I/O, no
plotting; see :mod:`medsure.conformal.plots` and :mod:`medsure.conformal.report`).

All studies take probabilities ``(N, K)`` and labels, e.g. from
:func:`medsure.conformal.classifier.to_probabilities`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medsure.conformal.classifier import SplitConformalClassifier
from medsure.conformal.metrics import (DEFAULT_DELTA, class_overlap, coverage, set_metrics,
                                       validity)
from medsure.conformal.quantile import coverage_band, expected_coverage, min_calibration_size
from medsure.conformal.scores import METHODS
from medsure.errors import MedsureInputError
from medsure.utils.progress import progress
from medsure.utils.random import make_generator

DEFAULT_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)


def is_exact(clf: SplitConformalClassifier) -> bool:
    """Whether the calibrated score is tie-free, so the band's upper end applies too.

    Randomized scores are; Top-K and deterministic APS/RAPS/SAPS over-cover by design. LAC is
    tie-free in theory, but saturated float softmax outputs (p = 1.0) tie in practice: it counts
    as exact only when no two calibration scores tie at a threshold.
    """
    if clf.randomized_:
        return True
    if clf.method != "lac":
        return False
    finite = clf.thresholds_[np.isfinite(clf.thresholds_)]
    return all(np.count_nonzero(clf.cal_scores_ == t) <= 1 for t in finite)


def evaluate(clf: SplitConformalClassifier, sets: np.ndarray, labels: np.ndarray, *,
             groups: np.ndarray | None = None, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """Metrics, coverage band and validity of one calibrated run on labelled test data.

    Parameters
    ----------
    clf : SplitConformalClassifier
        Calibrated.
    sets : ndarray of bool (N, K)
        ``clf.predict_set(test)``.
    labels : ndarray (N,)
        True test labels.
    groups : ndarray (N,), optional
        Test groups (required for ``conditional="group"``).
    delta : float
        Mass outside the coverage band.

    Returns
    -------
    dict
        :meth:`SplitConformalClassifier.describe`, :func:`set_metrics` and :func:`validity` merged;
        for class/group runs also ``per_stratum`` (coverage and band of every stratum). For
        strata that used a fallback the band is approximate (``"include"`` strata count as
        always covered; ``"marginal"`` strata use the marginal calibration size).
    """
    alpha = float(clf.alpha)
    labels = np.asarray(labels)
    result: dict[str, Any] = clf.describe()
    result["class_names"] = list(clf.class_names_)
    result.update(set_metrics(sets, labels, alpha))
    exact = is_exact(clf)
    hit = sets[np.arange(labels.size), labels]
    if clf.conditional == "marginal":
        result.update(validity(result["coverage"], alpha, clf.n_cal_, labels.size, exact=exact,
                               delta=delta))
        return result
    if clf.conditional == "class":
        test_strata = labels
        names = clf.strata_
    else:
        if groups is None:
            raise MedsureInputError("group-conditional evaluation needs the test groups")
        groups = np.asarray(groups).astype(str)
        names = sorted(set(clf.strata_) | set(np.unique(groups).tolist()))
        test_strata = np.searchsorted(np.asarray(names), groups)
    fallback_of = {f["stratum"]: f["fallback"] for f in clf.fallbacks_}
    cal_count = dict(zip(clf.strata_, (int(c) for c in clf.stratum_counts_)))
    rows, band_cal, band_test, always = [], [], [], 0
    # each stratum is tested at delta / (number tested) (Bonferroni), so a correct run is
    # flagged with probability <= delta however many strata there are
    n_tested = sum(1 for s, name in enumerate(names) if np.any(test_strata == s)
                   and fallback_of.get(name, None if name in cal_count else clf.fallback) is None)
    stratum_delta = delta / max(n_tested, 1)
    for s, name in enumerate(names):
        mask = test_strata == s
        m = int(mask.sum())
        n_c = cal_count.get(name, 0)
        mode = fallback_of.get(name, None if name in cal_count else clf.fallback)
        row: dict[str, Any] = {"stratum": name, "n_cal": n_c, "n_test": m, "fallback": mode,
                               "coverage": float(hit[mask].mean()) if m else None}
        if m and mode is None:
            row.update(validity(row["coverage"], alpha, n_c, m, exact=exact, delta=stratum_delta))
            band_cal.append(n_c)
            band_test.append(m)
        elif m and mode == "marginal":
            band_cal.append(clf.n_cal_)
            band_test.append(m)
        elif m:
            always += m
        rows.append(row)
    result["per_stratum"] = rows
    n_test = labels.size
    if band_test:
        low, high = coverage_band(np.array(band_cal), alpha, np.array(band_test), delta)
        covered_part = sum(band_test)
        low = (low * covered_part + always) / n_test
        high = (high * covered_part + always) / n_test
    else:
        low = high = 1.0
    cov = result["coverage"]
    status = "below" if cov < low else "above" if cov > high else "inside"
    valid = status == "inside" or (status == "above" and not exact)
    result.update({
        "coverage_band": [low, high], "band_delta": delta, "band_status": status,
        "valid": bool(valid and all(r.get("valid", True) for r in rows)),
        "exact_band": exact,
        "band_note": (f"overall coverage {cov:.4f} vs band [{low:.4f}, {high:.4f}] "
                      f"(convolution of the per-{clf.conditional} beta-binomial laws); "
                      f"{sum(1 for r in rows if r.get('valid') is False)} stratum/strata outside "
                      f"their own band (each at delta/{max(n_tested, 1)}, Bonferroni)"),
    })
    return result


def _pool(cal_probs, cal_labels, test_probs, test_labels):
    probs = np.concatenate([np.asarray(cal_probs), np.asarray(test_probs)])
    labels = np.concatenate([np.asarray(cal_labels), np.asarray(test_labels)])
    return probs, labels


def _clf(method: str, alpha: float, seed: int, *, conditional: str = "marginal",
         randomized: bool = True, fallback: str | None = None) -> SplitConformalClassifier:
    return SplitConformalClassifier(method, alpha, conditional=conditional, randomized=randomized,
                                    fallback=fallback, input="probs", seed=seed)


def calibration_size_study(probs: np.ndarray, labels: np.ndarray, *, method: str = "aps",
                           alpha: float = 0.1, sizes: Sequence[int] | None = None,
                           n_repeats: int = 100, randomized: bool = True, seed: int = 0,
                           delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """Coverage spread over repeated random calibration/test splits at several calibration sizes.

    For every size ``n``, ``n_repeats`` random splits of the pooled data put ``n`` samples in
    calibration and the rest in test; the observed coverages are compared with the exact band for
    ``(n, n_test)``.

    Parameters
    ----------
    probs : ndarray (N, K)
        Pooled probabilities (calibration and test together).
    labels : ndarray (N,)
    method, alpha, randomized, delta
        As in :class:`SplitConformalClassifier` / :func:`coverage_band`.
    sizes : sequence of int, optional
        Calibration sizes (default: up to 6 values from the smallest feasible to N/2).
    n_repeats : int
    seed : int

    Returns
    -------
    dict with ``method``, ``alpha``, ``rows`` (one per size: ``n_cal``, ``n_test``, ``coverages``,
    ``mean``, ``sd``, ``band``, ``expected``, ``fraction_outside_band``, ``mean_set_size``).
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    n = labels.size
    n_min = min_calibration_size(alpha)
    if sizes is None:
        hi = max(n_min, n // 2)
        sizes = sorted({int(round(v)) for v in np.geomspace(max(n_min, 10), hi, 6)})
    rng = make_generator(seed)
    rows = []
    for size in progress(sizes, desc="calibration sizes"):
        size = int(size)
        if size < n_min or size >= n:
            raise MedsureInputError(f"calibration size {size} outside [{n_min}, {n - 1}] for alpha={alpha}")
        covs, mean_sizes = [], []
        for _ in range(n_repeats):
            perm = rng.permutation(n)
            cal, test = perm[:size], perm[size:]
            clf = _clf(method, alpha, int(rng.integers(2**31)), randomized=randomized)
            clf.calibrate(probs[cal], labels[cal])
            sets = clf.predict_set(probs[test])
            covs.append(coverage(sets, labels[test]))
            mean_sizes.append(float(sets.sum(axis=1).mean()))
        n_used = clf.n_cal_
        low, high = coverage_band(n_used, alpha, n - size, delta)
        covs_arr = np.asarray(covs)
        rows.append({
            "n_cal": size, "n_cal_used": n_used, "n_test": n - size, "coverages": covs,
            "mean": float(covs_arr.mean()), "sd": float(covs_arr.std(ddof=1)) if n_repeats > 1 else 0.0,
            "band": [low, high], "true_coverage_band": list(coverage_band(n_used, alpha, None, delta)),
            "expected": expected_coverage(n_used, alpha),
            "fraction_outside_band": float(np.mean((covs_arr < low) | (covs_arr > high))),
            "mean_set_size": float(np.mean(mean_sizes)),
        })
    return {"method": method, "alpha": alpha, "randomized": randomized, "n_repeats": n_repeats,
            "delta": delta, "seed": seed, "rows": rows}


def confidence_sweep(cal_probs: np.ndarray, cal_labels: np.ndarray, test_probs: np.ndarray,
                     test_labels: np.ndarray, *, method: str = "aps",
                     levels: Sequence[float] = DEFAULT_LEVELS, randomized: bool = True, seed: int = 0,
                     delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """Coverage and set size against the requested confidence level ``1 - alpha``.

    Levels that the calibration size cannot support (``alpha < 1/(n+1)``) are listed in
    ``skipped`` with the reason.
    """
    rows, skipped = [], []
    for level in levels:
        alpha = 1.0 - float(level)
        try:
            clf = _clf(method, alpha, seed, randomized=randomized).calibrate(cal_probs, cal_labels)
        except MedsureInputError as exc:
            skipped.append({"level": float(level), "reason": str(exc)})
            continue
        sets = clf.predict_set(test_probs)
        res = evaluate(clf, sets, test_labels, delta=delta)
        rows.append({"level": float(level), "alpha": alpha, "coverage": res["coverage"],
                     "mean_set_size": res["mean_set_size"], "singleton_rate": res["singleton_rate"],
                     "empty_rate": res["empty_rate"], "band": res["coverage_band"],
                     "valid": res["valid"]})
    return {"method": method, "randomized": randomized, "rows": rows, "skipped": skipped}


def method_comparison(cal_probs: np.ndarray, cal_labels: np.ndarray, test_probs: np.ndarray,
                      test_labels: np.ndarray, *, alpha: float = 0.1,
                      methods: Sequence[str] = METHODS, seed: int = 0,
                      delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """Every score, randomized where it applies plus deterministic APS, marginal and
    class-conditional. A class too small for class-conditional calibration is reported in the
    row's ``error`` instead of aborting the comparison."""
    variants = []
    for method in methods:
        variants.append((method, True))
        if method == "aps":
            variants.append((method, False))
    rows = []
    for method, randomized in variants:
        for conditional in ("marginal", "class"):
            name = method + ("" if randomized or method in ("lac", "topk") else " (deterministic)")
            row: dict[str, Any] = {"method": method, "name": name, "randomized": randomized,
                                   "conditional": conditional}
            try:
                clf = _clf(method, alpha, seed, conditional=conditional, randomized=randomized)
                clf.calibrate(cal_probs, cal_labels)
            except MedsureInputError as exc:
                row["error"] = str(exc)
                rows.append(row)
                continue
            res = evaluate(clf, clf.predict_set(test_probs), test_labels, delta=delta)
            row.update({key: res[key] for key in (
                "coverage", "mean_set_size", "median_set_size", "singleton_rate", "empty_rate",
                "worst_class_coverage", "coverage_gap", "per_class_coverage", "coverage_band",
                "band_status", "valid", "params", "n_cal_used")})
            row["randomized"] = res["randomized"]
            rows.append(row)
    return {"alpha": alpha, "rows": rows}


def overlap_study(sets: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Class-overlap matrix: ``matrix[i][j]`` = share of true-class-``i`` samples whose set
    contains class ``j`` (diagonal = per-class coverage)."""
    return {"class_names": list(map(str, class_names)),
            "matrix": class_overlap(sets, labels).tolist(),
            "counts": np.bincount(np.asarray(labels), minlength=len(class_names)).tolist()}


def hardest_cases(sets: np.ndarray, probs: np.ndarray, labels: np.ndarray, ids: Sequence[str], *,
                  n: int = 12) -> dict[str, Any]:
    """The ``n`` test samples with the largest sets (ties: lowest probability of the true label).

    Returns ``{"cases": [{"index", "id", "label", "set", "set_size", "p_true", "top"}...]}``.
    """
    sizes = sets.sum(axis=1)
    p_true = probs[np.arange(labels.size), labels]
    order = np.lexsort((p_true, -sizes))[:n]
    cases = []
    for i in order.tolist():
        cases.append({"index": int(i), "id": str(ids[i]), "label": int(labels[i]),
                      "set": np.flatnonzero(sets[i]).tolist(), "set_size": int(sizes[i]),
                      "p_true": float(p_true[i]), "top": int(np.argmax(probs[i])),
                      "covered": bool(sets[i, labels[i]])})
    return {"cases": cases}
