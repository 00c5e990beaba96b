"""Reference checks: medsure's conformal sets against MAPIE 1.6 on the same probabilities.

MAPIE is given the probabilities through a pre-fitted lookup estimator (X is the row index), so
both libraries see identical inputs. Each convention difference documented in
``medsure.conformal.scores`` is asserted here. TorchCP cannot be installed in this environment
(its dependency torchsort fails to build), so it is not compared.
"""

from __future__ import annotations

import numpy as np
import pytest

mapie_classification = pytest.importorskip("mapie.classification")
from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402

from medsure.conformal import scores as S  # noqa: E402
from medsure.conformal.classifier import SplitConformalClassifier  # noqa: E402
from medsure.conformal.quantile import conformal_quantile  # noqa: E402
from medsure.conformal.scores import true_label_rank  # noqa: E402

ALPHA = 0.1
MAPIE_SEED = 7


class ProbaLookup(ClassifierMixin, BaseEstimator):
    """A 'fitted classifier' whose predict_proba returns fixed probabilities by row index."""

    def __init__(self, probs=None):
        self.probs = probs

    def fit(self, X=None, y=None):
        self.classes_ = np.arange(self.probs.shape[1])
        return self

    def predict_proba(self, X):
        return self.probs[np.asarray(X)[:, 0].astype(int)]

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


@pytest.fixture(scope="module")
def data():
    """Tie-free probabilities (6 classes) and labels drawn from them."""
    rng = np.random.default_rng(0)
    n, k = 3000, 6
    logits = rng.normal(size=(n, k)) * 1.5
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    return probs, labels, np.arange(1000), np.arange(1000, n)


def run_mapie(probs, labels, cal, test, score, include_last_label=True):
    est = ProbaLookup(probs).fit()
    model = mapie_classification.SplitConformalClassifier(
        estimator=est, confidence_level=1 - ALPHA, conformity_score=score, prefit=True, random_state=MAPIE_SEED
    )
    model.conformalize(cal[:, None], labels[cal])
    _, sets = model.predict_set(test[:, None], conformity_score_params={"include_last_label": include_last_label})
    return sets[:, :, 0], model._mapie_classifier.conformity_score_function_


def mapie_u(size):
    """MAPIE draws u_M = RandomState(seed).uniform(size) afresh per call; medsure's u = 1 - u_M."""
    return 1.0 - np.random.RandomState(MAPIE_SEED).uniform(size=size)


def test_lac_equals_mapie(data):
    probs, labels, cal, test = data
    sets_m, cs = run_mapie(probs, labels, cal, test, "lac")
    q = conformal_quantile(S.label_scores("lac", probs[cal], labels[cal]), ALPHA)
    assert q == pytest.approx(float(cs.quantiles_[0]), abs=1e-12)
    np.testing.assert_array_equal(S.prediction_sets("lac", probs[test], q), sets_m)
    # through the estimator, reading probabilities
    clf = SplitConformalClassifier("lac", ALPHA, input="probs").fit(probs[cal], labels[cal])
    np.testing.assert_array_equal(clf.predict(probs[test]), sets_m)


def test_topk_equals_mapie_with_zero_based_rank(data):
    probs, labels, cal, test = data
    sets_m, cs = run_mapie(probs, labels, cal, test, "top_k")
    q = conformal_quantile(S.label_scores("topk", probs[cal], labels[cal]), ALPHA)
    assert q == float(cs.quantiles_[0]) + 1  # MAPIE: 0-based rank, medsure: 1-based
    np.testing.assert_array_equal(S.prediction_sets("topk", probs[test], q), sets_m)


def test_randomized_aps_equals_mapie_randomized(data):
    probs, labels, cal, test = data
    sets_m, cs = run_mapie(probs, labels, cal, test, "aps", include_last_label="randomized")
    scores = S.label_scores("aps", probs[cal], labels[cal], mapie_u(cal.size))
    q = conformal_quantile(scores, ALPHA)
    assert q == pytest.approx(float(cs.quantiles_[0]), abs=1e-12)
    ours = S.prediction_sets("aps", probs[test], q, mapie_u(test.size))
    np.testing.assert_array_equal(ours, sets_m)
    clf = SplitConformalClassifier("aps", ALPHA, input="probs").fit(probs[cal], labels[cal], u=mapie_u(cal.size))
    np.testing.assert_array_equal(clf.predict(probs[test], u=mapie_u(test.size)), sets_m)


def test_mapie_default_aps_is_randomized_calibration_with_last_label_sets(data):
    """MAPIE's default APS: q from randomized scores, sets {y: ahead(y) < q} (never empty).
    medsure's deterministic APS uses the same set rule with q from deterministic scores, so its
    threshold is lower and its sets are subsets of MAPIE's."""
    probs, labels, cal, test = data
    sets_m, _cs = run_mapie(probs, labels, cal, test, "aps", include_last_label=True)
    q_rand = conformal_quantile(S.label_scores("aps", probs[cal], labels[cal], mapie_u(cal.size)), ALPHA)
    np.testing.assert_array_equal(S.prediction_sets("aps", probs[test], q_rand), sets_m)
    q_det = conformal_quantile(S.label_scores("aps", probs[cal], labels[cal]), ALPHA)
    ours = S.prediction_sets("aps", probs[test], q_det)
    assert q_det <= q_rand
    assert np.all(ours <= sets_m) and ours.sum() < sets_m.sum()
    assert ours.sum(axis=1).min() >= 1


def test_raps_threshold_and_sets_match_mapie_given_its_tuning(data):
    """Reproduce MAPIE's RAPS from its held-out split and (k_star, lambda_star): same calibration
    scores, same threshold; default sets follow the rule documented in medsure.conformal.scores;
    randomized sets agree wherever MAPIE's tie-break denominator equals the paper's."""
    probs, labels, cal, test = data
    sets_default, cs = run_mapie(probs, labels, cal, test, "raps", include_last_label=True)
    sets_random, _cs_r = run_mapie(probs, labels, cal, test, "raps", include_last_label="randomized")
    k_star, lam = int(cs.k_star[0]), float(cs.lambda_star)
    tuned = np.asarray(cs.X_raps)[:, 0].astype(int)
    kept = np.setdiff1d(cal, tuned)
    # MAPIE keeps the non-tuning rows in StratifiedShuffleSplit order; recover that order.
    # (MAPIE 1.6's v1 API resets size_raps to None, i.e. sklearn's default 10% hold-out.)
    from sklearn.model_selection import StratifiedShuffleSplit

    train_idx, _ = next(
        StratifiedShuffleSplit(n_splits=1, test_size=cs.size_raps, random_state=MAPIE_SEED).split(
            cal[:, None], labels[cal]
        )
    )
    kept_ordered = cal[train_idx]
    np.testing.assert_array_equal(np.sort(kept_ordered), kept)
    u = mapie_u(kept_ordered.size)
    scores = S.label_scores("raps", probs[kept_ordered], labels[kept_ordered], u, k_reg=k_star, lam=lam)
    q = conformal_quantile(scores, ALPHA)
    assert q == pytest.approx(float(cs.quantiles_[0]), abs=1e-9)

    # MAPIE default sets: {y : ahead(y) + lam * max(r(y) - 1 - k, 0) < q} = medsure's
    # deterministic RAPS rule with k_reg + 1
    mapie_rule = S.prediction_sets("raps", probs[test], q, k_reg=k_star + 1, lam=lam)
    np.testing.assert_array_equal(mapie_rule, sets_default)

    # randomized: identical wherever the crossing rank L <= k_star (no penalty in MAPIE's
    # denominator); elsewhere MAPIE divides by p_L - lam*(L-k)^+ + lam instead of p_L.
    ours = S.prediction_sets("raps", probs[test], q, mapie_u(test.size), k_reg=k_star, lam=lam)
    crossing_rank = sets_default.sum(axis=1)
    agree_zone = crossing_rank <= k_star
    assert agree_zone.mean() > 0.5
    np.testing.assert_array_equal(ours[agree_zone], sets_random[agree_zone])

    # k_reg: medsure follows the paper code (empirical 'higher' quantile of the rank); MAPIE uses
    # the (n+1)-corrected quantile, which is never smaller and here at most one rank larger.
    ours_k = int(np.quantile(true_label_rank(probs[tuned], labels[tuned]), 1 - ALPHA, method="higher"))
    assert 0 <= k_star - ours_k <= 1


def test_raps_with_lambda_zero_is_aps(data):
    probs, _labels, _cal, test = data
    u = np.random.default_rng(3).random(test.size)
    a = S.candidate_scores("aps", probs[test], u)
    r = S.candidate_scores("raps", probs[test], u, k_reg=2, lam=0.0)
    np.testing.assert_array_equal(a, r)
