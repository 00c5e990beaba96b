"""Conformal analyses: one run (:func:`evaluate_conformal`, behind ``medsure conformal``), and the
study (:func:`evaluate_conformal_study`, behind ``medsure conformal-study`` and the demo): the
calibration-size study with per-class coverage stability, confidence sweep, method comparison,
class-overlap matrix and hardest cases grouped by confused class pairs. Each returns results
(JSON-ready dicts, plus the arrays the figures need); no I/O, no plotting
(:mod:`medsure.conformal.plots` and :mod:`medsure.conformal.report` render them).

All studies take probabilities ``(N, K)`` and labels, e.g. from
:func:`medsure.conformal.classifier.to_probabilities`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsure.artifact import Predictions, check_compatible
from medsure.conformal.classifier import Conditional, InputKind, SplitConformalClassifier, to_probabilities
from medsure.conformal.metrics import DEFAULT_DELTA, class_overlap, covered, set_sizes
from medsure.conformal.quantile import coverage_band, expected_coverage, min_calibration_size
from medsure.conformal.scores import SCORES
from medsure.errors import MedsureInputError
from medsure.utils.progress import progress
from medsure.utils.random import make_generator
from medsure.validation import check_float, input_error

DEFAULT_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)


@dataclass
class ConformalRun:
    """Everything ``medsure conformal`` reports for one fitted run.

    Attributes
    ----------
    result : dict
        JSON-ready: :meth:`SplitConformalClassifier.describe`, the set metrics, coverage band,
        validity, per-class coverage (and ``per_stratum`` for class/group runs). Without test
        labels the coverage keys are None and ``band_note`` says why.
    sets : ndarray of bool (N, K)
        The test prediction sets.
    classifier : SplitConformalClassifier
        The fitted estimator.
    """

    result: dict[str, Any]
    sets: np.ndarray
    classifier: SplitConformalClassifier

    def to_dict(self) -> dict[str, Any]:
        return self.result


def evaluate_conformal(
    cal: Predictions | np.ndarray,
    test: Predictions | np.ndarray,
    *,
    method: str = "aps",
    alpha: float = 0.1,
    conditional: Conditional = "marginal",
    group_key: str | None = None,
    randomized: bool = True,
    fallback: str | None = None,
    params: dict[str, Any] | None = None,
    input: InputKind = "logits",
    seed: int | None = 0,
    cal_labels: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    delta: float = DEFAULT_DELTA,
) -> ConformalRun:
    """Fit on ``cal``, predict sets for ``test`` and measure them: the one computation behind
    ``medsure conformal``.

    Parameters
    ----------
    cal, test : Predictions or ndarray (N, K) / (T, N, K)
    method, alpha, conditional, group_key, randomized, fallback, params, input, seed
        As in :class:`SplitConformalClassifier`.
    cal_labels, test_labels : ndarray (N,), optional
        Labels when the inputs are arrays. An unlabelled test set gives sizes only.
    delta : float
        Mass outside the coverage band.

    Returns
    -------
    ConformalRun
    """
    check_float("delta", delta, low=0.0, high=1.0, closed="neither")
    clf = SplitConformalClassifier(
        method,
        alpha,
        conditional=conditional,
        group_key=group_key,
        randomized=randomized,
        fallback=fallback,
        params=params,
        input=input,
        seed=seed,
    ).fit(cal, cal_labels)
    sets = clf.predict(test)
    labels = test_labels if test_labels is not None else (test.labels if isinstance(test, Predictions) else None)
    if labels is not None:
        groups = None
        if conditional == "group":
            groups = test.meta.get(group_key) if isinstance(test, Predictions) and group_key is not None else None
        result = clf.score_sets(sets, np.asarray(labels), groups=groups, delta=delta)
    else:
        sizes = set_sizes(sets)
        result = clf.describe()
        result.update(
            {
                "coverage": None,
                "valid": None,
                "coverage_band": None,
                "per_class_coverage": None,
                "class_names": list(clf.class_names_),
                "n": int(sets.shape[0]),
                "mean_set_size": float(sizes.mean()),
                "median_set_size": float(np.median(sizes)),
                "empty_rate": float(np.mean(sizes == 0)),
                "singleton_rate": float(np.mean(sizes == 1)),
                "size_histogram": np.bincount(sizes, minlength=clf.n_classes_ + 1).tolist(),
                "band_note": "test file has no labels: coverage cannot be measured",
            }
        )
    return ConformalRun(result=result, sets=sets, classifier=clf)


def _clf(
    method: str,
    alpha: float,
    seed: int,
    *,
    conditional: Conditional = "marginal",
    randomized: bool = True,
    fallback: str | None = None,
) -> SplitConformalClassifier:
    return SplitConformalClassifier(
        method, alpha, conditional=conditional, randomized=randomized, fallback=fallback, input="probs", seed=seed
    )


#: Quantiles of the per-class coverage over repeats reported by the calibration-size study.
CLASS_COVERAGE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def calibration_size_study(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "aps",
    alpha: float = 0.1,
    sizes: Sequence[int] | None = None,
    n_repeats: int = 100,
    randomized: bool = True,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Coverage spread over repeated random calibration/test splits at several calibration sizes,
    marginal and per class.

    For every size ``n``, ``n_repeats`` random splits of the pooled data put ``n`` samples in
    calibration and the rest in test; the observed coverages are compared with the exact band for
    ``(n, n_test)``. The same splits give each class's coverage (among test samples of that
    class): a marginal method guarantees nothing per class, and a rare class's coverage swings
    most from one calibration draw to the next — the per-class rows show by how much.

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
    class_names : sequence of str (K,), optional

    Returns
    -------
    dict with ``method``, ``alpha``, ``class_names``, ``class_counts`` (pooled count per class),
    ``rows`` (one per size: ``n_cal``, ``n_test``, ``coverages``, ``mean``, ``sd``, ``band``,
    ``expected``, ``fraction_outside_band``, ``mean_set_size``, and ``per_class``: one entry per
    class with ``class``, ``count`` (pooled), ``mean_n_test``, ``mean``, ``sd``, ``quantiles``
    (at :data:`CLASS_COVERAGE_QUANTILES`), ``n_repeats_absent`` (splits without that class in
    test), ``coverages`` (one per split, None when absent) and ``n_tests`` (its test count per
    split)).
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    n = labels.size
    k = probs.shape[1]
    names = [str(c) for c in class_names] if class_names is not None else [f"class_{j}" for j in range(k)]
    class_counts = np.bincount(labels, minlength=k)
    n_min = min_calibration_size(alpha)
    if sizes is None:
        hi = max(n_min, n // 2)
        sizes = sorted({round(v) for v in np.geomspace(max(n_min, 10), hi, 6).tolist()})
    rng = make_generator(seed)
    rows = []
    for requested in progress(sizes, desc="calibration sizes"):
        size = int(requested)
        if size < n_min or size >= n:
            raise input_error(
                "calibration size", size, f"a size in [{n_min}, {n - 1}] for alpha={alpha}", "use sizes a split allows"
            )
        covs, mean_sizes = [], []
        class_hits = np.zeros((n_repeats, k))
        class_n = np.zeros((n_repeats, k))
        for r in range(n_repeats):
            perm = rng.permutation(n)
            cal, test = perm[:size], perm[size:]
            clf = _clf(method, alpha, int(rng.integers(2**31)), randomized=randomized)
            clf.fit(probs[cal], labels[cal])
            sets = clf.predict(probs[test])
            hit = covered(sets, labels[test])
            covs.append(float(hit.mean()))
            class_hits[r] = np.bincount(labels[test], weights=hit, minlength=k)
            class_n[r] = np.bincount(labels[test], minlength=k)
            mean_sizes.append(float(set_sizes(sets).mean()))
        n_used = clf.n_cal_
        low, high = coverage_band(n_used, alpha, n - size, delta)
        covs_arr = np.asarray(covs)
        rows.append(
            {
                "n_cal": size,
                "n_cal_used": n_used,
                "n_test": n - size,
                "coverages": covs,
                "mean": float(covs_arr.mean()),
                "sd": float(covs_arr.std(ddof=1)) if n_repeats > 1 else 0.0,
                "band": [low, high],
                "true_coverage_band": list(coverage_band(n_used, alpha, None, delta)),
                "expected": expected_coverage(n_used, alpha),
                "fraction_outside_band": float(np.mean((covs_arr < low) | (covs_arr > high))),
                "mean_set_size": float(np.mean(mean_sizes)),
                "per_class": _class_coverage_stability(class_hits, class_n, names, class_counts),
            }
        )
    return {
        "method": method,
        "alpha": alpha,
        "randomized": randomized,
        "n_repeats": n_repeats,
        "delta": delta,
        "seed": seed,
        "class_names": names,
        "class_counts": class_counts.tolist(),
        "quantile_levels": list(CLASS_COVERAGE_QUANTILES),
        "rows": rows,
    }


def _class_coverage_stability(
    class_hits: np.ndarray, class_n: np.ndarray, names: Sequence[str], class_counts: np.ndarray
) -> list[dict[str, Any]]:
    """Per class: mean, sd and quantiles of its coverage over the repeats (R, K) inputs."""
    out = []
    for j, name in enumerate(names):
        present = class_n[:, j] > 0
        cov = class_hits[present, j] / class_n[present, j]
        entry: dict[str, Any] = {
            "class": name,
            "index": j,
            "count": int(class_counts[j]),
            "mean_n_test": float(class_n[:, j].mean()),
            "n_repeats_absent": int((~present).sum()),
            "coverages": [
                float(c) if ok else None
                for c, ok in zip(np.divide(class_hits[:, j], np.maximum(class_n[:, j], 1)), present, strict=True)
            ],
            "n_tests": class_n[:, j].astype(int).tolist(),
        }
        if cov.size:
            entry.update(
                {
                    "mean": float(cov.mean()),
                    "sd": float(cov.std(ddof=1)) if cov.size > 1 else 0.0,
                    "quantiles": np.quantile(cov, CLASS_COVERAGE_QUANTILES).tolist(),
                }
            )
        else:  # the class never reached the test side: undefined, said as None (never NaN)
            entry.update({"mean": None, "sd": None, "quantiles": None})
        out.append(entry)
    return out


def confidence_sweep(
    cal_probs: np.ndarray,
    cal_labels: np.ndarray,
    test_probs: np.ndarray,
    test_labels: np.ndarray,
    *,
    method: str = "aps",
    levels: Sequence[float] = DEFAULT_LEVELS,
    randomized: bool = True,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
) -> dict[str, Any]:
    """Coverage and set size against the requested confidence level ``1 - alpha``.

    Levels that the calibration size cannot support (``alpha < 1/(n+1)``) are listed in
    ``skipped`` with the reason.
    """
    rows, skipped = [], []
    for level in levels:
        alpha = 1.0 - float(level)
        try:
            clf = _clf(method, alpha, seed, randomized=randomized).fit(cal_probs, cal_labels)
        except MedsureInputError as exc:
            skipped.append({"level": float(level), "reason": str(exc)})
            continue
        res = clf.score(test_probs, test_labels, delta=delta)
        rows.append(
            {
                "level": float(level),
                "alpha": alpha,
                "coverage": res["coverage"],
                "mean_set_size": res["mean_set_size"],
                "singleton_rate": res["singleton_rate"],
                "empty_rate": res["empty_rate"],
                "band": res["coverage_band"],
                "valid": res["valid"],
            }
        )
    return {"method": method, "randomized": randomized, "rows": rows, "skipped": skipped}


def method_comparison(
    cal_probs: np.ndarray,
    cal_labels: np.ndarray,
    test_probs: np.ndarray,
    test_labels: np.ndarray,
    *,
    alpha: float = 0.1,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    deterministic_too: Sequence[str] = ("aps",),
) -> dict[str, Any]:
    """Every registered score (or ``methods``), randomized where the score allows it, plus the
    deterministic variant of the randomizable scores in ``deterministic_too``; marginal and
    class-conditional. A class too small for class-conditional calibration is reported in the
    row's ``error`` instead of aborting the comparison."""
    variants = []
    for method in tuple(SCORES) if methods is None else methods:
        variants.append((method, True))
        if method in deterministic_too and SCORES[method].randomizable:
            variants.append((method, False))
    rows = []
    for method, randomized in variants:
        for conditional in ("marginal", "class"):
            name = method + ("" if randomized or not SCORES[method].randomizable else " (deterministic)")
            row: dict[str, Any] = {"method": method, "name": name, "randomized": randomized, "conditional": conditional}
            try:
                clf = _clf(method, alpha, seed, conditional=conditional, randomized=randomized)
                clf.fit(cal_probs, cal_labels)
            except MedsureInputError as exc:
                row["error"] = str(exc)
                rows.append(row)
                continue
            res = clf.score(test_probs, test_labels, delta=delta)
            row.update(
                {
                    key: res[key]
                    for key in (
                        "coverage",
                        "mean_set_size",
                        "median_set_size",
                        "singleton_rate",
                        "empty_rate",
                        "worst_class_coverage",
                        "coverage_gap",
                        "per_class_coverage",
                        "coverage_band",
                        "band_status",
                        "valid",
                        "params",
                        "n_cal_used",
                    )
                }
            )
            row["randomized"] = res["randomized"]
            rows.append(row)
    return {"alpha": alpha, "rows": rows}


def overlap_study(sets: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Class-overlap matrix: ``matrix[i][j]`` = share of true-class-``i`` samples whose set
    contains class ``j`` (diagonal = per-class coverage)."""
    return {
        "class_names": list(map(str, class_names)),
        "matrix": class_overlap(sets, labels).tolist(),
        "counts": np.bincount(np.asarray(labels), minlength=len(class_names)).tolist(),
    }


def _case(
    i: int,
    sets: np.ndarray,
    sizes: np.ndarray,
    probs: np.ndarray,
    p_true: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[str],
) -> dict[str, Any]:
    return {
        "index": int(i),
        "id": str(ids[i]),
        "label": int(labels[i]),
        "set": np.flatnonzero(sets[i]).tolist(),
        "set_size": int(sizes[i]),
        "p_true": float(p_true[i]),
        "top": int(np.argmax(probs[i])),
        "covered": bool(sets[i, labels[i]]),
    }


def confused_pairs(overlap: np.ndarray, *, n_pairs: int = 3, min_share: float = 0.05) -> list[dict[str, Any]]:
    """The class pairs the overlap matrix finds most often together, strongest first.

    A pair ``(i, j)`` is confused when true-class-``i`` sets often contain ``j`` or true-class-``j``
    sets often contain ``i``; its strength is ``max(M[i, j], M[j, i])``.

    Parameters
    ----------
    overlap : ndarray (K, K)
        :func:`medsure.conformal.metrics.class_overlap`.
    n_pairs : int
        At most this many pairs.
    min_share : float
        Pairs weaker than this are not listed.

    Returns
    -------
    list of dict ``{"classes": [i, j], "overlap": [M[i, j], M[j, i]], "strength"}`` (i < j)
    """
    m = np.asarray(overlap, dtype=np.float64)
    i, j = np.triu_indices(m.shape[0], k=1)
    strength = np.maximum(m[i, j], m[j, i])
    order = np.argsort(-strength, kind="stable")
    return [
        {
            "classes": [int(i[o]), int(j[o])],
            "overlap": [float(m[i[o], j[o]]), float(m[j[o], i[o]])],
            "strength": float(strength[o]),
        }
        for o in order[:n_pairs]
        if strength[o] >= min_share
    ]


def hardest_cases(
    sets: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[str],
    *,
    n: int = 12,
    overlap: np.ndarray | None = None,
    n_pairs: int = 3,
    n_per_pair: int = 6,
    min_share: float = 0.05,
) -> dict[str, Any]:
    """The hardest test samples overall and for each frequently confused class pair.

    Hardness: the largest set first, then the lowest probability of the true label. Overall:
    the ``n`` hardest. Per pair found by :func:`confused_pairs` in the overlap matrix: the
    ``n_per_pair`` hardest samples whose set contains both classes of the pair — the cases a
    reader needs to see to understand *why* the model cannot tell those two classes apart.

    Parameters
    ----------
    sets : ndarray of bool (N, K)
    probs : ndarray (N, K)
    labels : ndarray (N,)
    ids : sequence of str (N,)
    n : int
    overlap : ndarray (K, K), optional
        The class-overlap matrix of these sets (computed when None).
    n_pairs, n_per_pair, min_share
        See :func:`confused_pairs`.

    Returns
    -------
    dict ``{"cases": [{"index", "id", "label", "set", "set_size", "p_true", "top", "covered"}...],
    "pairs": [{"classes", "overlap", "strength", "n_both", "cases": [...]}...]}``
    """
    sizes = set_sizes(sets)
    p_true = probs[np.arange(labels.size), labels]
    hardness = np.lexsort((p_true, -sizes))  # hardest first
    cases = [_case(i, sets, sizes, probs, p_true, labels, ids) for i in hardness[:n].tolist()]
    if overlap is None:
        overlap = class_overlap(sets, labels)
    pairs = []
    for pair in confused_pairs(overlap, n_pairs=n_pairs, min_share=min_share):
        a, b = pair["classes"]
        both = sets[hardness, a] & sets[hardness, b]
        members = hardness[both]
        pair["n_both"] = int(members.size)
        pair["cases"] = [_case(i, sets, sizes, probs, p_true, labels, ids) for i in members[:n_per_pair].tolist()]
        pairs.append(pair)
    return {"cases": cases, "pairs": pairs}


@dataclass
class ConformalStudy:
    """Results of :func:`evaluate_conformal_study`.

    Attributes
    ----------
    analyses : dict of str to dict
        JSON-ready results by name: ``run``, ``run_class``, ``calibration_size``,
        ``confidence_sweep``, ``method_comparison``, ``class_overlap``, ``hardest_cases``.
    sets : ndarray of bool (N, K)
        Test sets of the main (marginal) run.
    classifier : SplitConformalClassifier
        The main run's fitted estimator.
    thumbnails : ndarray, optional
        The test thumbnails (for the hardest-case figures; indices in ``hardest_cases``).
    """

    analyses: dict[str, dict[str, Any]]
    sets: np.ndarray
    classifier: SplitConformalClassifier
    thumbnails: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return self.analyses


def evaluate_conformal_study(
    cal: Predictions,
    test: Predictions,
    *,
    method: str = "aps",
    alpha: float = 0.1,
    seed: int = 0,
    randomized: bool = True,
    n_repeats: int = 100,
    input: InputKind = "logits",
    delta: float = DEFAULT_DELTA,
) -> ConformalStudy:
    """The main run and every conformal analysis on labelled ``cal`` and ``test``.

    Parameters
    ----------
    cal, test : Predictions
        Labelled classification predictions of the same model.
    method : str
        Score of the main run, size study, sweep, overlap and hardest cases.
    alpha, seed, randomized, input, delta
        As in :class:`SplitConformalClassifier` / :func:`evaluate_conformal`.
    n_repeats : int
        Random splits per calibration size.

    Returns
    -------
    ConformalStudy
    """
    check_compatible(cal, test)
    cal_y, test_y = cal.labels, test.labels
    if cal_y is None or test_y is None:
        raise input_error(
            "cal" if cal_y is None else "test",
            "no 'labels' key",
            "labelled predictions",
            "the conformal analyses need labels",
            raw=True,
        )
    cal_p = to_probabilities(cal, input=input, what="cal")
    test_p = to_probabilities(test, input=input, what="test")
    names = list(map(str, cal.class_names))
    analyses: dict[str, Any] = {}
    clf = SplitConformalClassifier(method, alpha, randomized=randomized, input="probs", seed=seed)
    clf.fit(cal_p, cal_y)
    sets = clf.predict(test_p)
    analyses["run"] = clf.score_sets(sets, test_y, delta=delta)
    try:
        clf_c = SplitConformalClassifier(
            method, alpha, conditional="class", randomized=randomized, input="probs", seed=seed
        ).fit(cal_p, cal_y)
        analyses["run_class"] = clf_c.score(test_p, test_y, delta=delta)
    except MedsureInputError as exc:
        analyses["run_class"] = {"error": str(exc)}
    pooled_p, pooled_y = np.concatenate([cal_p, test_p]), np.concatenate([cal_y, test_y])
    analyses["calibration_size"] = calibration_size_study(
        pooled_p,
        pooled_y,
        method=method,
        alpha=alpha,
        n_repeats=n_repeats,
        randomized=randomized,
        seed=seed,
        delta=delta,
        class_names=names,
    )
    analyses["confidence_sweep"] = confidence_sweep(
        cal_p, cal_y, test_p, test_y, method=method, randomized=randomized, seed=seed, delta=delta
    )
    analyses["method_comparison"] = method_comparison(cal_p, cal_y, test_p, test_y, alpha=alpha, seed=seed, delta=delta)
    analyses["class_overlap"] = overlap_study(sets, test_y, names)
    analyses["hardest_cases"] = hardest_cases(
        sets,
        test_p,
        test_y,
        test.ids.astype(str).tolist(),
        overlap=np.asarray(analyses["class_overlap"]["matrix"]),
    )
    analyses["hardest_cases"]["class_names"] = names
    return ConformalStudy(analyses=analyses, sets=sets, classifier=clf, thumbnails=test.thumbnails)
