"""Failure-detection metrics, CSFs, the combined CSF and the review threshold:
hand-computed cases, properties and reference checks against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import average_precision_score, roc_auc_score

from medsure.artifact import make_predictions
from medsure.errors import MedsureInputError
from medsure.failure import (
    CSF_SPECS,
    CombinedCSF,
    SelectiveRiskThreshold,
    augrc,
    aupr_error,
    aurc,
    auroc_failure,
    bootstrap_ci,
    clopper_pearson_upper,
    compute_csfs,
    evaluate_failure,
    excess_aurc,
    failure_metrics,
    fpr_at_95_tpr,
    risk_coverage_curve,
    selective_risk_at_coverage,
)
from medsure.failure import csf as csf_mod
from medsure.failure.metrics import METRICS, _weighted_metrics

# ---- metrics: hand-computed and properties ---------------------------------------------------


def test_aurc_hand_computed():
    conf = np.array([0.9, 0.8, 0.7])
    err = np.array([0, 1, 0])
    # E_k = 0, 1, 1 -> AURC = (0/1 + 1/2 + 1/3) / 3
    assert aurc(conf, err) == pytest.approx((0.5 + 1 / 3) / 3)
    # oracle ranks the error last: E_k = 0, 0, 1 -> 1/9
    assert excess_aurc(conf, err) == pytest.approx((0.5 + 1 / 3) / 3 - 1 / 9)
    # generalized risk points (1/3, 0), (2/3, 1/3), (1, 1/3): trapezoid area
    assert augrc(conf, err) == pytest.approx(0 + (1 / 3) * (1 / 6) + (1 / 3) * (1 / 3))


def test_ties_are_one_curve_point_and_random_order():
    conf = np.array([1.0, 1.0, 0.5])
    err = np.array([1, 0, 0])
    curve = risk_coverage_curve(conf, err)
    np.testing.assert_allclose(curve.coverage, [2 / 3, 1.0])
    np.testing.assert_allclose(curve.selective_risk, [0.5, 1 / 3])
    # tied block in random order: E_1 = 0.5, E_2 = 1, E_3 = 1
    assert aurc(conf, err) == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    # the result does not depend on the input order inside a tie
    assert aurc(conf[[1, 0, 2]], err[[1, 0, 2]]) == aurc(conf, err)


def test_all_correct_gives_zero_and_undefined_auroc():
    rng = np.random.default_rng(0)
    conf, err = rng.random(50), np.zeros(50)
    assert aurc(conf, err) == 0.0
    assert excess_aurc(conf, err) == 0.0
    assert augrc(conf, err) == 0.0
    with pytest.raises(MedsureInputError, match="both correct and wrong"):
        auroc_failure(conf, err)
    out = failure_metrics(conf, err, n_boot=50)
    assert out["auroc_f"]["value"] is None and "undefined" in out["auroc_f"]
    assert out["aurc"]["value"] == 0.0


def test_constant_and_random_csf_give_error_rate():
    rng = np.random.default_rng(1)
    err = (rng.random(400) < 0.2).astype(int)
    assert aurc(np.zeros(400), err) == pytest.approx(err.mean())
    values = [aurc(rng.random(400), err) for _ in range(200)]
    # the mean over random CSFs is the error rate (the AURC is unbiased for it)
    assert np.mean(values) == pytest.approx(err.mean(), abs=3 * np.std(values) / np.sqrt(200))
    augrcs = [augrc(rng.random(400), err) for _ in range(200)]
    assert np.mean(augrcs) == pytest.approx(err.mean() / 2, abs=0.005)


def test_oracle_csf():
    rng = np.random.default_rng(2)
    err = (rng.random(300) < 0.3).astype(int)
    conf = -err + 0.01 * rng.random(300)
    assert excess_aurc(conf, err) == pytest.approx(0.0, abs=1e-12)
    assert augrc(conf, err) == pytest.approx(err.mean() ** 2 / 2)
    assert auroc_failure(conf, err) == 1.0
    assert fpr_at_95_tpr(conf, err) == 0.0


def test_auroc_and_aupr_match_sklearn_with_ties():
    rng = np.random.default_rng(3)
    conf = np.round(rng.random(500), 1)  # many ties
    err = (rng.random(500) < 0.25 + 0.3 * (conf < 0.5)).astype(int)
    assert auroc_failure(conf, err) == pytest.approx(roc_auc_score(1 - err, conf))
    assert aupr_error(conf, err) == pytest.approx(average_precision_score(err, -conf))


def test_fpr95_hand_computed():
    conf = np.arange(10, 0, -1, dtype=float)  # 10 cases, most confident first
    err = np.array([0, 0, 0, 1, 0, 0, 0, 0, 1, 0])
    # 8 correct; 95 % of them needs all 8 accepted = all 10 cases -> both errors accepted
    assert fpr_at_95_tpr(conf, err) == 1.0
    # at TPR 0.75 (6 correct) the first 7 cases are accepted -> 1 of 2 errors
    assert fpr_at_95_tpr(conf, err, tpr=0.75) == 0.5


def test_selective_risk_at_coverage_hand_computed():
    conf = np.array([4.0, 3.0, 2.0, 1.0])
    err = np.array([0, 1, 0, 1])
    out = selective_risk_at_coverage(conf, err, coverages=(0.25, 0.5, 1.0))
    assert out == {0.25: 0.0, 0.5: 0.5, 1.0: 0.5}


def test_vectorised_bootstrap_equals_explicit_resampling():
    rng = np.random.default_rng(4)
    conf = np.round(rng.random(80), 1)
    err = (rng.random(80) < 0.3).astype(float)
    index = rng.integers(0, 80, size=(30, 80))
    counts = np.stack([np.bincount(i, minlength=80) for i in index])
    fast = _weighted_metrics(conf, err, counts)
    for name, fn in METRICS.items():
        slow = [fn(conf[i], err[i]) if 0 < err[i].sum() < 80 else np.nan for i in index]
        np.testing.assert_allclose(fast[name], slow, atol=1e-12, err_msg=name)


def test_bootstrap_is_seeded_and_brackets_value():
    rng = np.random.default_rng(5)
    conf = rng.random(200)
    err = (rng.random(200) < 0.4 - 0.3 * conf).astype(int)
    a = bootstrap_ci(conf, err, n_boot=300, seed=7)
    assert a == bootstrap_ci(conf, err, n_boot=300, seed=7)
    assert a["aurc"][0] < aurc(conf, err) < a["aurc"][1]
    assert a["auroc_f"][0] < auroc_failure(conf, err) < a["auroc_f"][1]


def test_metric_input_errors():
    with pytest.raises(MedsureInputError, match="errors"):
        aurc(np.zeros(3), np.array([0, 2, 1]))
    with pytest.raises(MedsureInputError, match="confidence"):
        aurc(np.array([0.0, np.nan]), np.array([0, 1]))


# ---- CSFs --------------------------------------------------------------------------------------


def test_csf_values_hand_computed():
    p = np.array([[0.7, 0.2, 0.1]])
    z = np.log(p)
    assert csf_mod.msr(z)[0] == pytest.approx(0.7)
    assert csf_mod.margin(z)[0] == pytest.approx(0.5)
    assert csf_mod.topk_margin(z, k=3)[0] == pytest.approx(0.6)
    assert csf_mod.predictive_entropy(z)[0] == pytest.approx(-(p * np.log(p)).sum())
    g = (p**2).sum()
    assert csf_mod.doctor(z)[0] == pytest.approx((1 - g) / g)
    assert csf_mod.energy(z)[0] == pytest.approx(0.0, abs=1e-12)  # logsumexp(log p) = 0
    assert csf_mod.max_logit(z)[0] == pytest.approx(np.log(0.7))


def test_sample_csfs_identical_samples_have_no_epistemic_part():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(40, 4))
    samples = np.repeat(z[None], 5, axis=0)
    np.testing.assert_allclose(csf_mod.sample_mutual_information(samples), 0.0, atol=1e-12)
    np.testing.assert_allclose(csf_mod.sample_variance(samples), 0.0, atol=1e-15)
    np.testing.assert_allclose(csf_mod.sample_msr(samples), csf_mod.msr(z))
    np.testing.assert_allclose(csf_mod.sample_expected_entropy(samples), csf_mod.predictive_entropy(z))
    noisy = samples + rng.normal(size=samples.shape)
    assert np.all(csf_mod.sample_mutual_information(noisy) >= 0)
    pe, ee = csf_mod.sample_predictive_entropy(noisy), csf_mod.sample_expected_entropy(noisy)
    np.testing.assert_allclose(csf_mod.sample_mutual_information(noisy), pe - ee, atol=1e-12)


def test_cam_concentration_extremes():
    cams = np.zeros((3, 4, 4))
    cams[0, 1, 1] = 5.0  # one hot pixel -> 1
    cams[1] = 1.0  # uniform -> 0
    np.testing.assert_allclose(csf_mod.cam_concentration(cams), [1.0, 0.0, 0.0], atol=1e-12)


def test_every_csf_declares_input_and_direction():
    for name, spec in CSF_SPECS.items():
        assert spec.input in ("logits", "samples", "cam"), name
        assert isinstance(spec.higher_is_confident, bool), name
    # oriented scores: a sharper softmax is more confident for every logit CSF
    z = np.array([[2.0, 0.0, 0.0], [6.0, 0.0, 0.0]])
    for name, conf in compute_csfs(make_predictions(z)).items():
        assert conf[1] > conf[0], name


def test_combined_csf_fitted_on_cal_only_and_beats_noise():
    rng = np.random.default_rng(8)
    n = 2000
    signal = rng.normal(size=n)
    err = (rng.random(n) < 1 / (1 + np.exp(2 * signal + 1))).astype(int)
    csfs = {"useful": signal + 0.3 * rng.normal(size=n), "noise": rng.normal(size=n)}
    comb = CombinedCSF().fit({k: v[:1000] for k, v in csfs.items()}, err[:1000])
    w = dict(zip(comb.names_, comb.weights_, strict=True))
    assert w["useful"] > 5 * abs(w["noise"])
    score = comb.predict({k: v[1000:] for k, v in csfs.items()})
    assert auroc_failure(score, err[1000:]) > auroc_failure(csfs["noise"][1000:], err[1000:]) + 0.2
    with pytest.raises(MedsureInputError, match="both correct and wrong"):
        CombinedCSF().fit(csfs, np.zeros(n))


def test_evaluate_failure_on_artifacts():
    rng = np.random.default_rng(9)
    z = rng.normal(size=(6, 300, 3)) + 2 * rng.normal(size=(1, 300, 3))
    y = rng.integers(0, 3, 300)
    cal = make_predictions(z[:, :150], labels=y[:150], sample_kind="mc_dropout")
    test = make_predictions(z[:, 150:], labels=y[150:], sample_kind="mc_dropout")
    out = evaluate_failure(cal, test, n_boot=100, seed=0)
    assert {"msr", "doctor", "mc_dropout_mutual_information", "combined"} <= set(out.csfs)
    for metrics in out.csfs.values():
        for key in ("aurc", "eaurc", "augrc", "auroc_f", "fpr95"):
            lo, hi = metrics[key]["ci"]
            assert lo <= hi
    errors = test.probabilities().argmax(1) != y[150:]
    assert out.error_rate == pytest.approx(errors.mean())


# ---- review threshold --------------------------------------------------------------------------


def test_clopper_pearson_upper_is_exact():
    for e, n in ((0, 20), (3, 50), (10, 40)):
        ub = float(clopper_pearson_upper(e, n, 0.05))
        assert binom.cdf(e, n, ub) == pytest.approx(0.05, abs=1e-9)
    assert clopper_pearson_upper(5, 5, 0.05) == 1.0


def test_review_threshold_synthetic_guarantee():
    # population with known risk curve: error probability 0.4 * (1 - c) for confidence c
    rng = np.random.default_rng(10)
    pop_conf = rng.random(100_000)
    pop_err = (rng.random(100_000) < 0.4 * (1 - pop_conf)).astype(int)
    target, delta, trials, n = 0.15, 0.1, 300, 1000
    failures, coverages = 0, []
    for _ in range(trials):
        idx = rng.integers(0, pop_conf.shape[0], n)
        sgr = SelectiveRiskThreshold(target, delta).fit(pop_conf[idx], pop_err[idx])
        accepted = sgr.accept(pop_conf)
        coverages.append(accepted.mean())
        if accepted.any() and pop_err[accepted].mean() > target:
            failures += 1
    assert failures <= binom.ppf(0.999, trials, delta)
    assert np.mean(coverages) > 0.3  # not vacuous


def test_review_threshold_reports_share_and_rejects_all_when_impossible():
    conf = np.linspace(0, 1, 50)
    err = np.ones(50, dtype=int)
    sgr = SelectiveRiskThreshold(0.05, 0.1).fit(conf, err)
    assert sgr.review_share(conf) == 1.0
    report = sgr.score(conf, err)
    assert report["coverage"] == 0.0 and report["threshold"] is None
    with pytest.raises(MedsureInputError, match="target_risk"):
        SelectiveRiskThreshold(1.5).fit(conf, err)


def test_topk_margin_is_exact_for_large_k():
    from medsure.failure.csf import topk_margin

    rng = np.random.default_rng(21)
    logits = rng.normal(size=(50, 1000)) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ordered = -np.sort(-p, axis=1)
    for k in (2, 3, 200, 600):
        np.testing.assert_allclose(topk_margin(logits, k=k), ordered[:, 0] - ordered[:, k - 1], atol=1e-12)


def test_sample_artifact_csfs_score_the_predicted_class():
    # with samples, MSR must be the top probability of the mean softmax, whose argmax is the prediction
    rng = np.random.default_rng(22)
    samples = rng.normal(size=(7, 300, 4)) * 4
    pred = make_predictions(samples.astype(np.float32), labels=rng.integers(0, 4, 300), sample_kind="mc_dropout")
    csfs = compute_csfs(pred)
    np.testing.assert_allclose(csfs["msr"], pred.probabilities().max(axis=1), rtol=1e-5)
    np.testing.assert_allclose(csfs["msr"], csfs["mc_dropout_msr"], rtol=1e-5)


def test_unknown_combined_csf_is_one_clear_error():
    rng = np.random.default_rng(23)
    cal = make_predictions(rng.normal(size=(60, 3)).astype(np.float32), labels=rng.integers(0, 3, 60))
    with pytest.raises(MedsureInputError, match="nope"):
        evaluate_failure(cal, cal, combine=["msr", "nope"], n_boot=0)
