"""Conformal seed analyses on real predictions (tests/realpreds.py): per-class coverage stability of
the calibration-size study and hardest cases grouped by the class pairs of the overlap matrix."""

from __future__ import annotations

import numpy as np
import pytest

from medsure.conformal import SplitConformalClassifier, class_overlap
from medsure.conformal.analysis import calibration_size_study, confused_pairs, hardest_cases
from medsure.conformal.classifier import to_probabilities

realpreds = pytest.importorskip("realpreds", reason="tests/realpreds.py (real prediction artifacts) not available")


def _pooled(name: str):
    cal, test = realpreds.classification_predictions(name)
    probs = np.concatenate([to_probabilities(cal), to_probabilities(test)])
    labels = np.concatenate([cal.labels, test.labels])
    return probs, labels, list(map(str, cal.class_names))


def test_per_class_coverage_stability_on_isic():
    probs, labels, names = _pooled("isic2017")
    counts = np.bincount(labels, minlength=len(names))
    sizes = [200, 500]
    result = calibration_size_study(
        probs, labels, method="lac", alpha=0.1, sizes=sizes, n_repeats=60, seed=3, class_names=names
    )
    assert result["class_counts"] == counts.tolist() and result["class_names"] == names
    rare = int(np.argmin(counts))
    for row in result["rows"]:
        per_class = row["per_class"]
        assert [e["count"] for e in per_class] == counts.tolist()
        # aggregation check, exact per split: class hits add up to the marginal hits
        for r, marginal in enumerate(row["coverages"]):
            hits = sum(e["coverages"][r] * e["n_tests"][r] for e in per_class if e["coverages"][r] is not None)
            assert sum(e["n_tests"][r] for e in per_class) == row["n_test"]
            assert hits == pytest.approx(marginal * row["n_test"], abs=1e-6)
        for e in per_class:
            q = e["quantiles"]
            assert q == sorted(q) and q[0] >= 0 and q[-1] <= 1
            assert e["mean_n_test"] == pytest.approx(np.mean(e["n_tests"]))
        # a rare class's coverage swings far more between calibration draws than the marginal one
        assert per_class[rare]["sd"] > 2 * row["sd"]
    # sanity against an independent run: the rare class's mean coverage over the splits matches
    # what one marginal LAC run at the same calibration size gives it, within sampling error
    rng = np.random.default_rng(11)
    covs = []
    for _ in range(60):
        perm = rng.permutation(labels.size)
        cal, test = perm[:500], perm[500:]
        sets = SplitConformalClassifier("lac", 0.1, input="probs").fit(probs[cal], labels[cal]).predict(probs[test])
        mask = labels[test] == rare
        covs.append(sets[np.flatnonzero(mask), rare].mean())
    study = result["rows"][1]["per_class"][rare]
    assert abs(study["mean"] - np.mean(covs)) < 4 * np.hypot(study["sd"], np.std(covs)) / np.sqrt(60)


def test_hardest_cases_by_confused_pair_on_busi():
    cal, test = realpreds.classification_predictions("busi")
    clf = SplitConformalClassifier("aps", 0.1, seed=0).fit(cal)
    sets = clf.predict(test)
    probs = to_probabilities(test)
    labels = test.labels
    k = sets.shape[1]
    # the overlap matrix, computed independently: share of class-i samples whose set holds j
    overlap = np.array(
        [[sets[labels == i, j].mean() if np.any(labels == i) else 0.0 for j in range(k)] for i in range(k)]
    )
    np.testing.assert_allclose(class_overlap(sets, labels), overlap)
    result = hardest_cases(sets, probs, labels, test.ids, overlap=overlap, n_pairs=3, n_per_pair=5, min_share=0.0)
    pairs = result["pairs"]
    strengths = {(i, j): max(overlap[i, j], overlap[j, i]) for i in range(k) for j in range(i + 1, k)}
    expected = sorted(strengths, key=lambda p: -strengths[p])[:3]
    assert [tuple(p["classes"]) for p in pairs] == expected
    assert pairs[0]["strength"] > 0.05  # a real model on BUSI confuses some pair often
    sizes = sets.sum(axis=1)
    p_true = probs[np.arange(labels.size), labels]
    for pair in pairs:
        a, b = pair["classes"]
        both = np.flatnonzero(sets[:, a] & sets[:, b])
        assert pair["n_both"] == both.size
        idx = [c["index"] for c in pair["cases"]]
        assert len(idx) == min(5, both.size) and set(idx) <= set(both.tolist())
        # hardest first: no case left out is harder than the last one listed
        key = [(-sizes[i], p_true[i]) for i in idx]
        assert key == sorted(key)
        if idx:
            rest = set(both.tolist()) - set(idx)
            assert all((-sizes[i], p_true[i]) >= key[-1] for i in rest)
    assert confused_pairs(overlap, n_pairs=3, min_share=1.01) == []
