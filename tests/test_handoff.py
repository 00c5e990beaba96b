"""Hand-off policy, triage and audit (issue 13): exact small cases, references, real-data guarantees."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from medsure import __version__
from medsure.artifact import make_predictions
from medsure.errors import MedsureInputError
from medsure.handoff import Policy, clopper_pearson_interval, evaluate_audit, load_policy, save_policy, triage
from medsure.handoff.audit import verdict

realpreds = pytest.importorskip("realpreds", reason="tests/realpreds.py (real prediction artifacts) not available")


def _synthetic(n: int = 400, k: int = 3, seed: int = 0, *, names=None, meta=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)).astype(np.float32)
    logits[np.arange(n), labels] += rng.uniform(0, 4, n).astype(np.float32)
    return make_predictions(logits, labels=labels, class_names=names or [f"c{j}" for j in range(k)], meta=meta or {})


def _hand_policy(**over):
    """A policy record written by hand: LAC with threshold 0.5 (set = labels with p >= 0.5), review
    when msr < 0.8, calibration range of logsumexp [-10, 10]."""
    record = {
        "format": "medsure-policy",
        "format_version": 1,
        "medsure_version": __version__,
        "created": "2026-01-01T00:00:00+00:00",
        "task": "classification",
        "class_names": ["a", "b", "c"],
        "n_cal": 100,
        "cal_sha256": None,
        "params": {"method": "lac", "alpha": 0.1, "risk": 0.1, "delta": 0.1},
        "conformal": {
            "method": "lac",
            "conditional": "marginal",
            "alpha": 0.1,
            "randomized": False,
            "thresholds": [0.5],
            "params": {},
            "n_cal": 50,
        },
        "review": {
            "csf": "msr",
            "target_risk": 0.1,
            "delta": 0.1,
            "threshold": 0.8,
            "risk_bound": 0.09,
            "cal_coverage": 0.5,
            "cal_risk": 0.02,
            "n_cal": 50,
            "n_eligible": 40,
        },
        "mask": None,
        "range": {"score": "logsumexp", "low": -10.0, "high": 10.0},
        "limits": {},
    }
    record.update(over)
    return Policy.from_dict(record)


def _probs_pred(probs, ids=None):
    logits = np.log(np.asarray(probs, dtype=np.float64) + 1e-12).astype(np.float32)
    return make_predictions(logits, ids=ids, class_names=["a", "b", "c"])


# ---- triage: hand-computed decisions --------------------------------------------------------------


def test_triage_reasons_and_decisions_hand_computed():
    pred = _probs_pred(
        [
            [0.90, 0.05, 0.05],  # singleton, confident: auto
            [0.50, 0.50, 0.00],  # two labels with p >= 0.5: review (set), msr 0.5 < 0.8
            [0.40, 0.30, 0.30],  # no label reaches 0.5: empty set, msr 0.4
            [0.70, 0.20, 0.10],  # singleton but msr 0.7 < 0.8: review for confidence only
        ]
    )
    result = triage(_hand_policy(), pred)
    codes = result.reason_codes
    r = {code: result.reasons[:, j].tolist() for j, code in enumerate(codes)}
    assert r["set_multiple"] == [False, True, False, False]
    assert r["set_empty"] == [False, False, True, False]
    assert r["csf_below_threshold"] == [False, True, True, True]
    assert r["outside_calibration_range"] == [False] * 4
    assert result.auto.tolist() == [True, False, False, False]
    assert result.sets.sum(axis=1).tolist() == [1, 2, 0, 1]
    # priority: review first, more reasons first, then least confident; the auto case last
    assert result.priority.tolist() == [4, 2, 1, 3]
    assert result.summary["n_review"] == 3 and result.summary["review_rate"] == pytest.approx(0.75)


def test_outside_calibration_range_sends_to_review():
    policy = _hand_policy(range={"score": "logsumexp", "low": 0.5, "high": 1.0})
    pred = make_predictions(
        np.array([[5.0, 0.0, 0.0], [0.1, 0.0, 0.0], [30.0, 0.0, 0.0]], dtype=np.float32), class_names=["a", "b", "c"]
    )
    result = triage(policy, pred)
    column = result.reason_codes.index("outside_calibration_range")
    # logsumexp: 5.01 > 1.0 (outside), 1.17 > 1.0 (outside), 30 (outside)
    lse = np.log(np.exp(pred.logits.astype(np.float64)).sum(axis=1))
    assert result.reasons[:, column].tolist() == ((lse < 0.5) | (lse > 1.0)).tolist()


def test_no_certified_threshold_sends_everything_to_review():
    record_policy = _hand_policy()
    record_policy.review_ = {**record_policy.review_, "threshold": None}
    result = triage(record_policy, _probs_pred([[0.98, 0.01, 0.01]]))
    assert not result.auto.any()
    assert "every case goes to review" in result.guarantee["statements"][0]


def test_guarantee_statement_states_exchangeability():
    result = triage(_hand_policy(), _probs_pred([[0.98, 0.01, 0.01]]))
    assert any("exchangeable" in a for a in result.guarantee["assumptions"])
    assert result.guarantee["risk"]["target_risk"] == 0.1


# ---- policy: fit, record, refusals -----------------------------------------------------------------


def test_policy_fit_save_load_round_trip(tmp_path):
    cal = _synthetic()
    policy = Policy("aps", 0.1, conditional="class", risk=0.15, delta=0.1, seed=3).fit(cal, cal_sha256="abc")
    path = save_policy(tmp_path / "p.json", policy)
    loaded = load_policy(path)
    assert loaded.to_dict() == policy.to_dict()
    assert len(policy.conformal_["thresholds"]) == 3  # one per class
    record = json.loads(path.read_text())
    for key in ("medsure_version", "created", "cal_sha256", "n_cal", "class_names"):
        assert key in record
    assert record["params"]["alpha"] == 0.1 and record["params"]["delta"] == 0.1
    # the split: sets on one part, the review threshold on the rest, together the whole file
    assert policy.conformal_["n_cal"] + policy.review_["n_cal"] == cal.n_samples
    test = _synthetic(seed=1)
    a, b = triage(policy, test), triage(loaded, test)
    np.testing.assert_array_equal(a.auto, b.auto)
    np.testing.assert_array_equal(a.sets, b.sets)


def test_policy_sets_match_the_conformal_classifier():
    """Deterministic APS sets of the saved policy equal SplitConformalClassifier(randomized=False)'s."""
    from medsure.conformal import SplitConformalClassifier

    cal, test = _synthetic(seed=4), _synthetic(seed=5)
    policy = Policy("aps", 0.1).fit(cal)
    reference = SplitConformalClassifier("aps", 0.1, randomized=False).fit(cal).predict(test)
    np.testing.assert_array_equal(triage(policy, test).sets, reference)


def test_load_refuses_newer_medsure(tmp_path):
    policy = Policy().fit(_synthetic())
    record = policy.to_dict()
    record["medsure_version"] = "99.0.0"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(record))
    with pytest.raises(MedsureInputError, match=r"written by medsure 99\.0\.0.*Upgrade medsure"):
        load_policy(path)


def test_policy_refuses_other_class_names_and_k():
    policy = Policy().fit(_synthetic())
    with pytest.raises(MedsureInputError, match="class_names"):
        triage(policy, _synthetic(names=["x", "y", "z"]))
    with pytest.raises(MedsureInputError, match="K=4"):
        triage(policy, _synthetic(k=4))


def test_policy_bad_parameters_and_unlabelled_cal():
    with pytest.raises(MedsureInputError, match="alpha"):
        Policy(alpha=1.5).fit(_synthetic())
    with pytest.raises(MedsureInputError, match="csf"):
        Policy(csf="nonsense").fit(_synthetic())
    cal = _synthetic()
    unlabelled = make_predictions(cal.logits, class_names=list(cal.class_names))
    with pytest.raises(MedsureInputError, match="labelled calibration data"):
        Policy().fit(unlabelled)


def test_optional_scores_become_limits_and_are_required_at_triage():
    rng = np.random.default_rng(0)
    cal = _synthetic(meta={"evidential_u": rng.uniform(0, 1, 400)})
    policy = Policy(meta_review_rate=0.1).fit(cal)
    limit = policy.limits_["evidential_u"]
    assert limit["direction"] == "above"
    # the conformal quantile at 0.9 of the calibration scores: the ceil(401 * 0.9) = 361st smallest
    assert limit["limit"] == pytest.approx(np.sort(cal.meta["evidential_u"])[360])
    with pytest.raises(MedsureInputError, match="meta__evidential_u"):
        triage(policy, _synthetic(seed=2))
    u = np.array([0.0] * 199 + [2.0])
    test = _synthetic(n=200, seed=2, meta={"evidential_u": u})
    result = triage(policy, test)
    column = result.reason_codes.index("evidential_u")
    assert result.reasons[:, column].tolist() == (u > limit["limit"]).tolist()


def test_segmentation_policy_limits_and_masks():
    cal, test = realpreds.segmentation_predictions("kvasir")
    policy = Policy(seg_alpha=0.1, seg_review_rate=0.1).fit(cal)
    assert set(policy.limits_) == {"seg_uncertainty", "abstained_area"}
    result = triage(policy, test)
    # each limit sends at most ~10 % of exchangeable images: allow the binomial 0.1 % tail on 174 images
    for name in policy.limits_:
        share = result.reasons[:, result.reason_codes.index(name)].sum()
        assert share <= binom.ppf(0.999, test.n_samples, 0.1), name
    assert result.maps["conformal_mask"].shape == (test.n_samples, 1, 64, 64)
    # the conformal mask holds every pixel at or above lambda
    lam = policy.mask_["lambda"][0]
    np.testing.assert_array_equal(result.maps["conformal_mask"][:, 0], test.probabilities()[:, 1] >= lam)


# ---- the guarantee, as a statistic over real data -------------------------------------------------


@pytest.mark.realdata
def test_auto_accepted_risk_respects_the_bound_over_many_real_splits():
    """P(risk of the auto-accepted cases > r) <= delta, over draws of the calibration data.

    Population: every held-out PneumoniaMNIST prediction of the real model (cal + test, 624 cases).
    Each trial draws 312 calibration cases from it (i.i.d.), fits the whole policy (sets, range,
    review threshold on the split) and triages the whole population, so the measured risk among
    auto-accepted cases is the true risk of that policy there. Failing trials must stay within the
    binomial(trials, delta) band (one-sided, 0.1 % level); the mean coverage of the sets must reach
    1 - alpha up to three standard errors.
    """
    cal, test = realpreds.classification_predictions("pneumoniamnist")
    logits = np.concatenate([cal.logits, test.logits])
    labels = np.concatenate([cal.labels, test.labels])
    names = list(cal.class_names)
    population = make_predictions(logits, labels=labels, class_names=names)
    rng = np.random.default_rng(0)
    target, delta, alpha, trials = 0.15, 0.1, 0.1, 150  # the model's error rate there is 0.16
    failures, auto_shares, coverages = 0, [], []
    for trial in range(trials):
        idx = rng.integers(0, logits.shape[0], logits.shape[0] // 2)
        draw = make_predictions(logits[idx], labels=labels[idx], class_names=names)
        policy = Policy("aps", alpha, risk=target, delta=delta, seed=trial).fit(draw)
        result = triage(policy, population)
        auto = result.auto
        auto_shares.append(auto.mean())
        coverages.append(result.sets[np.arange(labels.size), labels].mean())
        if auto.any() and (result.predicted[auto] != labels[auto]).mean() > target:
            failures += 1
    assert failures <= binom.ppf(0.999, trials, delta), (failures, trials)
    assert np.mean(auto_shares) > 0.3, "guarantee is vacuous: almost nothing auto-accepted"
    se = np.sqrt(alpha * (1 - alpha) / 156) / np.sqrt(trials)
    assert np.mean(coverages) >= 1 - alpha - 3 * se


# ---- audit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (7, 250)])
def test_clopper_pearson_matches_scipy(k, n):
    reference = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert clopper_pearson_interval(k, n, 0.95) == pytest.approx((reference.low, reference.high), abs=1e-10)


def test_verdicts_hand_computed():
    # 2 errors in 100 against a 5 % promise: on the promised side
    assert verdict(2, 100, 0.05, upper=True)[0] == "held"
    # 8 / 100 vs 5 %: P(X >= 8 | 100, 0.05) = 0.128 -> not distinguishable
    status, p = verdict(8, 100, 0.05, upper=True)
    assert status == "not held, within sampling error" and p == pytest.approx(binom.sf(7, 100, 0.05))
    # 15 / 100 vs 5 %: p ~ 1e-4 -> violated
    assert verdict(15, 100, 0.05, upper=True)[0] == "violated"
    # coverage 80 / 100 vs 90 %: P(X <= 80 | 100, 0.9) ~ 0.002 -> violated
    assert verdict(80, 100, 0.9, upper=False)[0] == "violated"
    assert verdict(0, 0, 0.9, upper=False) == ("no data", None)


def test_evaluate_audit_counts_hand_computed():
    auto = np.array([True, True, True, False, False, True])
    predicted = np.array([0, 1, 0, 1, 0, 1])
    expert = np.array([0, 0, -2, 1, -1, 1])  # one error among auto (case 1), one unsure, one undecided
    sets = np.array([[1, 0], [0, 1], [1, 0], [1, 1], [1, 0], [0, 1]], dtype=bool)
    result = evaluate_audit(auto, predicted, sets, expert, promised_risk=0.1, delta=0.1, alpha=0.1)
    assert (result.n_auto_labelled, result.n_auto_errors, result.n_unsure) == (3, 1, 1)
    assert result.realised_risk == pytest.approx(1 / 3)
    assert (result.n_set_labelled, result.n_covered) == (4, 3)  # case 1: set {1}, expert 0
    assert result.risk_verdict == verdict(1, 3, 0.1, upper=True)[0]
    assert json.dumps(result.to_dict())  # JSON-ready


def test_audit_of_real_predictions_holds_on_the_test_split():
    cal, test = realpreds.classification_predictions("pneumoniamnist")
    policy = Policy("aps", 0.1, risk=0.1, delta=0.1).fit(cal)
    result = triage(policy, test)
    audit = evaluate_audit(
        result.auto, result.predicted, result.sets, test.labels, promised_risk=0.1, delta=0.1, alpha=0.1
    )
    assert audit.n_auto_labelled == result.auto.sum() > 0
    assert audit.risk_verdict != "violated"
    assert audit.coverage_verdict != "violated"


def test_nearest_neighbours_match_scikit_learn():
    from sklearn.neighbors import NearestNeighbors

    from medsure.handoff.triage import nearest_neighbours

    rng = np.random.default_rng(0)
    query, reference = rng.dirichlet(np.ones(4), 700), rng.dirichlet(np.ones(4), 300)
    indices, distances = nearest_neighbours(query, reference, 5, block_rows=128)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=5).fit(reference).kneighbors(query)
    np.testing.assert_allclose(distances, ref_dist, atol=1e-7)
    np.testing.assert_array_equal(indices, ref_idx)
