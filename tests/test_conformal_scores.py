"""Hand-computed tiny cases for every conformity score, the quantile and the coverage band."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medsure.conformal import scores as S
from medsure.conformal.quantile import conformal_quantile, coverage_band, expected_coverage, min_calibration_size
from medsure.errors import MedsureInputError

P = np.array([[0.5, 0.3, 0.2]])  # ranks: class 0 -> 1, class 1 -> 2, class 2 -> 3


def scores(method, u=None, **params):
    return S.candidate_scores(method, P, None if u is None else np.array([u]), **params)[0]


def test_every_score_declares_input_and_direction():
    assert set(S.SCORES) == set(S.METHODS)
    for spec in S.SCORES.values():
        assert spec.input_kind == "probabilities"
        assert spec.higher_is_less_conforming is True
    assert {m for m, s in S.SCORES.items() if s.randomizable} == {"aps", "raps", "saps"}


def test_lac_by_hand():
    np.testing.assert_allclose(scores("lac"), [0.5, 0.7, 0.8])


def test_aps_by_hand():
    np.testing.assert_allclose(scores("aps"), [0.0, 0.5, 0.8])  # mass strictly ahead
    np.testing.assert_allclose(scores("aps", u=1.0), [0.5, 0.8, 1.0])  # inclusive
    np.testing.assert_allclose(scores("aps", u=0.5), [0.25, 0.65, 0.9])


def test_raps_by_hand():
    # k_reg=1, lam=0.1: penalty 0, 0.1, 0.2 for ranks 1, 2, 3
    np.testing.assert_allclose(scores("raps", k_reg=1, lam=0.1), [0.0, 0.6, 1.0])
    np.testing.assert_allclose(scores("raps", u=0.5, k_reg=2, lam=0.1), [0.25, 0.65, 1.0])


def test_topk_by_hand():
    np.testing.assert_array_equal(scores("topk"), [1, 2, 3])


def test_saps_by_hand():
    # u*p_max for the top label, p_max + (rank - 2 + u) * weight otherwise
    np.testing.assert_allclose(scores("saps", u=0.5, weight=0.2), [0.25, 0.6, 0.8])
    np.testing.assert_allclose(scores("saps", weight=0.2), [0.0, 0.5, 0.7])


def test_ties_are_broken_by_class_index():
    p = np.array([[0.2, 0.4, 0.4]])
    np.testing.assert_allclose(S.candidate_scores("aps", p)[0], [0.8, 0.0, 0.4])
    np.testing.assert_array_equal(S.candidate_scores("topk", p)[0], [3, 1, 2])
    np.testing.assert_array_equal(S.prediction_sets("topk", p, 1.0)[0], [False, True, False])
    np.testing.assert_array_equal(S.prediction_sets("aps", p, 0.3)[0], [False, True, False])


def test_sets_by_hand():
    np.testing.assert_array_equal(S.prediction_sets("lac", P, 0.7)[0], [True, True, False])
    np.testing.assert_array_equal(S.prediction_sets("aps", P, 0.55)[0], [True, True, False])
    np.testing.assert_array_equal(
        S.prediction_sets("aps", P, 0.25, np.array([0.6]))[0], [False, False, False]
    )  # 0.6 * 0.5 = 0.3 > 0.25: empty
    np.testing.assert_array_equal(S.prediction_sets("topk", P, 2.0)[0], [True, True, False])
    # class-conditional thresholds: label 2 has a generous threshold
    np.testing.assert_array_equal(S.prediction_sets("lac", P, np.array([0.1, 0.1, 0.9]))[0], [False, False, True])


def test_label_scores_equal_candidate_scores_column_and_sets_match_scores():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(7, 0.4), size=3000)
    p[:300] = np.round(p[:300], 1)
    p[:300] /= p[:300].sum(axis=1, keepdims=True)  # many exact ties
    y = rng.integers(0, 7, size=3000)
    u = rng.random(3000)
    for method, params in [
        ("lac", {}),
        ("aps", {}),
        ("raps", {"k_reg": 2, "lam": 0.05}),
        ("topk", {}),
        ("saps", {"weight": 0.3}),
    ]:
        cand = S.candidate_scores(method, p, u, chunk_rows=700, **params)
        np.testing.assert_array_equal(
            S.label_scores(method, p, y, u, chunk_rows=700, **params), cand[np.arange(3000), y]
        )
        for q in (0.2, 0.9, 3.0):
            np.testing.assert_array_equal(S.prediction_sets(method, p, q, u, chunk_rows=700, **params), cand <= q)
            np.testing.assert_array_equal(
                S.prediction_sets_per_sample(method, p, np.full(3000, q), u, **params), cand <= q
            )


def test_score_parameter_errors():
    with pytest.raises(MedsureInputError, match="conformal method: got 'naive'; expected one of lac, aps"):
        S.candidate_scores("naive", P)
    with pytest.raises(MedsureInputError, match="k_reg"):
        S.candidate_scores("raps", P, k_reg=-1, lam=0.1)
    with pytest.raises(MedsureInputError, match=r"raps lam: got None; expected a value"):
        S.candidate_scores("raps", P, k_reg=1)
    with pytest.raises(MedsureInputError, match=r"lac score parameters: got \['weight'\]; expected no parameters"):
        S.candidate_scores("lac", P, weight=0.2)
    with pytest.raises(MedsureInputError, match="weight"):
        S.candidate_scores("saps", P, weight=0.0)
    with pytest.raises(MedsureInputError, match=r"u: got values in \[1.5, 1.5\]; expected values in \[0, 1\]"):
        S.candidate_scores("aps", P, np.array([1.5]))


# ---- quantile -----------------------------------------------------------------------------


def test_quantile_by_hand():
    scores = np.arange(1, 11) / 10  # 0.1 ... 1.0, n = 10
    assert conformal_quantile(scores, 0.1) == 1.0  # k = ceil(11 * 0.9) = 10
    assert conformal_quantile(scores, 0.2) == 0.9  # k = ceil(11 * 0.8) = 9
    assert conformal_quantile(scores[::-1], 0.5) == 0.6  # k = 6; order of input irrelevant
    original = scores.copy()
    conformal_quantile(scores, 0.3)
    np.testing.assert_array_equal(scores, original)  # input not modified


def test_too_small_alpha_says_how_many_samples_are_needed():
    assert min_calibration_size(0.1) == 9
    assert min_calibration_size(0.05) == 19
    assert min_calibration_size(0.3) == 3  # 1/0.3 - 1 = 2.33 -> 3
    conformal_quantile(np.arange(19.0), 0.05)  # exactly enough
    with pytest.raises(MedsureInputError, match=r"n = 18 calibration samples .*Use at least 19 calibration samples"):
        conformal_quantile(np.arange(18.0), 0.05)
    for bad in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(MedsureInputError, match=r"alpha: got .*; expected a finite number in \(0.0, 1.0\)"):
            conformal_quantile(np.arange(100.0), bad)


def test_band_by_hand():
    # n = 9, alpha = 0.1: l = 1, coverage ~ Beta(9, 1), CDF x^9
    low, high = coverage_band(9, 0.1, None, delta=0.1)
    assert low == pytest.approx(0.05 ** (1 / 9))
    assert high == pytest.approx(0.95 ** (1 / 9))
    assert expected_coverage(9, 0.1) == pytest.approx(0.9)
    assert expected_coverage(99, 0.1) == pytest.approx(0.9)
    assert expected_coverage(100, 0.1) == pytest.approx(91 / 101)


def test_band_is_betabinomial_and_strata_convolve():
    n, m, alpha, delta = 200, 150, 0.1, 0.05
    low, high = coverage_band(n, alpha, m, delta)
    n_out = math.floor((n + 1) * alpha)  # l in the paper
    dist = stats.betabinom(m, n + 1 - n_out, n_out)
    assert low == dist.ppf(delta / 2) / m and high == dist.ppf(1 - delta / 2) / m
    # two strata: the band of the pooled count, checked by simulating the exact model
    rng = np.random.default_rng(0)
    counts = [(60, 40), (150, 90)]
    low2, high2 = coverage_band(np.array([c[0] for c in counts]), alpha, np.array([c[1] for c in counts]), delta)
    total = np.zeros(40000)
    for n_c, m_c in counts:
        l_c = math.floor((n_c + 1) * alpha)
        total += rng.binomial(m_c, rng.beta(n_c + 1 - l_c, l_c, size=40000))
    frac = total / sum(c[1] for c in counts)
    outside = np.mean((frac < low2) | (frac > high2))
    assert outside <= delta + 0.006


def test_band_holds_for_simulated_split_conformal():
    """Uniform scores, many independent calibration/test draws: at most delta outside."""
    rng = np.random.default_rng(5)
    n, m, alpha, delta, reps = 99, 120, 0.1, 0.05, 3000
    cal = rng.random((reps, n))
    q = np.sort(cal, axis=1)[:, 89]  # k = ceil(100 * 0.9) = 90
    cov = (rng.random((reps, m)) <= q[:, None]).mean(axis=1)
    low, high = coverage_band(n, alpha, m, delta)
    assert np.mean((cov < low) | (cov > high)) <= delta + 3 * math.sqrt(delta * (1 - delta) / reps)
    assert abs(cov.mean() - expected_coverage(n, alpha)) < 4 * cov.std() / math.sqrt(reps)


def test_set_builders_reject_unknown_methods():
    p = np.full((2, 3), 1 / 3)
    for build in (
        lambda: S.prediction_sets("APS", p, 0.5),
        lambda: S.prediction_sets_per_sample("typo", p, np.ones(2)),
    ):
        with pytest.raises(MedsureInputError):
            build()


def test_lac_cutoff_selects_exactly_the_labels_whose_score_passes():
    rng = np.random.default_rng(5)
    thresholds = np.concatenate([rng.random(300), [0.0, 1.0, 0.5, 1e-17, 1 - 1e-17, 0.999999999]])
    for q in thresholds:
        c = S.lac_cutoff(q, {})
        assert 1.0 - c <= q  # the cutoff itself passes ...
        assert 1.0 - np.nextafter(c, -np.inf) > q  # ... and the float below it does not
    # the set builder uses it: identical to scoring every label and comparing
    p = rng.dirichlet(np.full(6, 0.3), size=4000)
    for q in (0.5, 0.9, 0.97, float(1.0 - p[3, 2])):  # the last threshold equals a score exactly
        np.testing.assert_array_equal(S.prediction_sets("lac", p, q), (1.0 - p) <= q)


def test_sorting_network_and_rank_lookup_equal_numpy():
    rng = np.random.default_rng(6)
    for k in (2, 3, 8, 11, 16, 17, 40):
        p = rng.dirichlet(np.ones(k), size=700)
        p[:80, 1] = p[:80, 0]  # exact ties
        sp = S._sorted_desc(p)
        np.testing.assert_array_equal(sp, -np.sort(-p, axis=1))
        y = rng.integers(0, k, 700)
        expected = (
            (p > p[np.arange(700), y][:, None]).sum(1)
            + 1
            + ((p == p[np.arange(700), y][:, None]) & (np.arange(k) < y[:, None])).sum(1)
        )
        np.testing.assert_array_equal(S._rank_of(p, y, sp), expected)
        np.testing.assert_array_equal(S._rank_of(p, y), expected)


def test_tune_raps_equals_the_brute_force_search_with_the_public_functions():
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.full(7, 0.4), size=3000)
    y = (rng.random(3000)[:, None] > np.cumsum(p, axis=1)).sum(axis=1).clip(0, 6)
    tuned = S.tune_raps(p, y, 0.1)
    k_reg = int(np.quantile(S.true_label_rank(p, y), 0.9, method="higher"))
    sizes = []
    for lam in S.RAPS_LAMBDA_GRID:
        q = conformal_quantile(S.label_scores("raps", p, y, k_reg=k_reg, lam=lam), 0.1)
        sizes.append(S.prediction_sets("raps", p, q, k_reg=k_reg, lam=lam).sum())
    assert tuned == {"k_reg": k_reg, "lam": S.RAPS_LAMBDA_GRID[int(np.argmin(sizes))]}


def test_a_score_registered_as_a_conformity_is_oriented_by_its_declared_direction(monkeypatch):
    # p - 1 is exactly -(1 - p) in floating point: declared as a conformity (higher = more
    # conforming), it must give LAC's scores and sets bit for bit
    spec = S.ScoreSpec(
        "lac_conformity", "probabilities", False, False, (), "p - 1", "elementwise", lambda values, params: values - 1.0
    )
    monkeypatch.setitem(S.SCORES, "lac_conformity", spec)
    rng = np.random.default_rng(8)
    p = rng.dirichlet(np.ones(5), size=500)
    y = rng.integers(0, 5, 500)
    np.testing.assert_array_equal(S.label_scores("lac_conformity", p, y), S.label_scores("lac", p, y))
    np.testing.assert_array_equal(S.prediction_sets("lac_conformity", p, 0.8), S.prediction_sets("lac", p, 0.8))
    np.testing.assert_array_equal(
        S.prediction_sets("lac_conformity", p, np.linspace(0.5, 0.9, 5)),
        S.prediction_sets("lac", p, np.linspace(0.5, 0.9, 5)),
    )


def test_quantile_by_counting_equals_the_partition_quantile():
    from medsure.conformal.quantile import conformal_quantile_of_counts

    rng = np.random.default_rng(10)
    levels = np.array([1.0, 2.0, 2.0, 3.5, 7.0])  # non-decreasing, with a repeated value
    for n in (9, 10, 57, 400):
        idx = rng.choice(5, size=n, p=[0.5, 0.2, 0.1, 0.15, 0.05])
        for alpha in (0.1, 0.2, 0.5):
            expected = conformal_quantile(levels[idx], alpha)
            assert conformal_quantile_of_counts(levels, np.bincount(idx, minlength=5), alpha) == expected
    with pytest.raises(MedsureInputError, match=r"n = 5 calibration samples .*Use at least 99 calibration samples"):
        conformal_quantile_of_counts(levels, np.array([3, 2, 0, 0, 0]), 0.01)
