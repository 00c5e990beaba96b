"""Failure detection, review guarantee and calibration on real predictions (tests/realpreds.py).

Skips with the reason when ../shared/data or the cached models are unavailable."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import roc_auc_score

from medsure.calibration import TemperatureScaling, negative_log_likelihood
from medsure.failure import (
    SelectiveRiskThreshold,
    auroc_failure,
    compute_csfs,
    evaluate_failure,
    excess_aurc,
    prediction_errors,
)

realpreds = pytest.importorskip("realpreds", reason="tests/realpreds.py (real prediction artifacts) not available")

pytestmark = pytest.mark.realdata


def _pool(name: str):
    cal, test = realpreds.classification_predictions(name)
    conf = np.r_[compute_csfs(cal)["msr"], compute_csfs(test)["msr"]]
    err = np.r_[prediction_errors(cal), prediction_errors(test)]
    return conf, err


def test_review_guarantee_over_many_draws_of_real_predictions():
    """P(selective risk at the chosen threshold > r) <= delta.

    The population is every held-out PneumoniaMNIST prediction of the real model (cal + test,
    624 cases); each trial draws a calibration set of 312 cases from it (i.i.d.), fits the SGR
    threshold and measures the selective risk on the whole population, so the measured risk is
    the true risk of that threshold. The number of failing trials must stay within the
    binomial(trials, delta) band (one-sided, 0.1 % level).
    """
    conf, err = _pool("pneumoniamnist")
    rng = np.random.default_rng(0)
    target, delta, trials = 0.08, 0.1, 400
    failures, coverages = 0, []
    for _ in range(trials):
        idx = rng.integers(0, conf.shape[0], conf.shape[0] // 2)
        sgr = SelectiveRiskThreshold(target, delta).fit(conf[idx], err[idx])
        accepted = sgr.accept(conf)
        coverages.append(accepted.mean())
        if accepted.any() and err[accepted].mean() > target:
            failures += 1
    assert failures <= binom.ppf(0.999, trials, delta), (failures, trials)
    assert np.mean(coverages) > 0.1, "guarantee is vacuous: nothing accepted"


def test_failure_metrics_on_isic_and_ph2():
    cal, test = realpreds.classification_predictions("isic2017")
    shift = realpreds.classification_shift_predictions("isic2017_ph2")
    for pred in (test, shift):
        result = evaluate_failure(cal, pred, n_boot=200, seed=0)
        errors = prediction_errors(pred)
        msr = compute_csfs(pred)["msr"]
        assert result.csfs["msr"]["auroc_f"]["value"] == pytest.approx(roc_auc_score(1 - errors, msr))
        assert excess_aurc(msr, errors) >= 0
        assert result.csfs["msr"]["augrc"]["value"] >= errors.mean() ** 2 / 2 - 1e-12
        assert result.combined.get("fitted_on") == "cal"


def test_temperature_scaling_on_real_predictions_lowers_cal_nll():
    cal, _test = realpreds.classification_predictions("busi")
    ts = TemperatureScaling().fit(cal.logits, cal.labels)
    before = negative_log_likelihood(cal.probabilities().astype(np.float64), cal.labels)
    assert negative_log_likelihood(ts.transform(cal.logits), cal.labels) <= before + 1e-9
    # temperatures fitted on the test half are not what the API ever uses: cal only
    assert ts.n_classes_ == 3


def test_auroc_failure_matches_sklearn_on_real_busi():
    _cal, test = realpreds.classification_predictions("busi")
    errors = prediction_errors(test)
    for name, conf in compute_csfs(test).items():
        assert auroc_failure(conf, errors) == pytest.approx(roc_auc_score(1 - errors, conf)), name
