"""Calibration metrics and calibrators: hand-computed cases and reference checks against
scikit-learn and torchmetrics on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from medsure.artifact import make_predictions, softmax
from medsure.calibration import (
    HistogramBinning,
    IsotonicCalibration,
    TemperatureScaling,
    VectorScaling,
    adaptive_calibration_error,
    binned_calibration,
    brier_score,
    calibration_summary,
    classwise_ece,
    evaluate_calibration,
    expected_calibration_error,
    make_calibrator,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
)
from medsure.errors import MedsureInputError


def _random_probs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2.0
    probs = softmax(logits, axis=1)
    # labels drawn from a slightly sharpened version: the model is miscalibrated
    sharp = softmax(logits * 1.5, axis=1)
    labels = (sharp.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return probs, labels


# ---- hand-computed tiny cases ---------------------------------------------------------------


def test_ece_mce_hand_computed():
    # 4 samples, 2 bins (0, .5] and (.5, 1]: all top confidences fall in the upper bin
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])  # correct: T, F, T, T
    # upper bin: mean conf (0.9+0.8+0.7+0.6)/4 = 0.75, accuracy 3/4 -> gap 0
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.0, abs=1e-12)
    # 4 bins of width .25: (.5,.75] holds .7,.6 (acc 1, conf .65); (.75,1] holds .9,.8 (acc .5, conf .85)
    assert expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.5 * 0.35 + 0.5 * 0.35)
    assert maximum_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.35)


def test_brier_nll_hand_computed():
    probs = np.array([[0.5, 0.5], [1.0, 0.0]])
    labels = np.array([0, 1])
    assert brier_score(probs, labels) == pytest.approx((0.25 + 0.25 + 1.0 + 1.0) / 2)
    assert negative_log_likelihood(probs, labels) == pytest.approx((np.log(2) - np.log(1e-15)) / 2)


def test_classwise_ece_and_ace_hand_computed():
    probs = np.array([[0.8, 0.2], [0.6, 0.4]])
    labels = np.array([0, 0])
    # class 0 scores .8, .6 with outcome 1 -> ECE(1 bin) = 1 - .7 = .3; class 1: .2, .4 outcome 0 -> .3
    assert classwise_ece(probs, labels, n_bins=1) == pytest.approx(0.3)
    # ACE with 2 equal-mass bins per class: gaps .2, .4 (class 0) and .2, .4 (class 1) -> mean .3
    assert adaptive_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.3)


def test_perfectly_calibrated_one_bin_per_value():
    # confidence 0.75 with exactly 3 of 4 correct: ECE 0
    probs = np.tile([0.75, 0.25], (4, 1))
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


# ---- reference checks -------------------------------------------------------------------------


def test_brier_and_nll_match_sklearn():
    probs, labels = _random_probs(400, 4, seed=1)
    assert negative_log_likelihood(probs, labels) == pytest.approx(log_loss(labels, probs, labels=range(4)))
    assert brier_score(probs, labels) == pytest.approx(
        brier_score_loss(labels, probs, labels=range(4), scale_by_half=False)
    )
    probs2, labels2 = _random_probs(300, 2, seed=2)
    assert brier_score(probs2, labels2) == pytest.approx(2 * brier_score_loss(labels2, probs2[:, 1]))


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_binning_matches_sklearn_calibration_curve(strategy):
    probs, labels = _random_probs(500, 2, seed=3)
    ours = binned_calibration(probs[:, 1], labels == 1, n_bins=8, strategy=strategy)
    prob_true, prob_pred = calibration_curve(labels == 1, probs[:, 1], n_bins=8, strategy=strategy)
    keep = ours.nonempty
    np.testing.assert_allclose(ours.mean_outcome[keep], prob_true, rtol=1e-10)
    np.testing.assert_allclose(ours.mean_score[keep], prob_pred, rtol=1e-10)


def test_ece_mce_match_torchmetrics():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.classification", reason="torchmetrics not installed")
    probs, labels = _random_probs(600, 3, seed=4)
    p, y = torch.tensor(probs), torch.tensor(labels)
    for n_bins in (5, 15):
        ref_ece = tm.multiclass_calibration_error(p, y, num_classes=3, n_bins=n_bins, norm="l1")
        ref_mce = tm.multiclass_calibration_error(p, y, num_classes=3, n_bins=n_bins, norm="max")
        assert expected_calibration_error(probs, labels, n_bins=n_bins) == pytest.approx(float(ref_ece), abs=1e-6)
        assert maximum_calibration_error(probs, labels, n_bins=n_bins) == pytest.approx(float(ref_mce), abs=1e-6)


def test_reliability_diagram_counts_and_accuracy():
    probs, labels = _random_probs(300, 3, seed=5)
    diagram = reliability_diagram(probs, labels, n_bins=10)
    assert diagram.count.sum() == 300
    correct = probs.argmax(1) == labels
    assert np.sum(diagram.count * diagram.mean_outcome) == pytest.approx(correct.sum())


def test_metrics_reject_bad_input():
    with pytest.raises(MedsureInputError, match="rows sum"):
        expected_calibration_error(np.array([[0.6, 0.6]]), np.array([0]))
    with pytest.raises(MedsureInputError, match="labels"):
        brier_score(np.array([[0.5, 0.5]]), np.array([2]))
    with pytest.raises(MedsureInputError, match="n_bins"):
        expected_calibration_error(np.array([[0.5, 0.5]]), np.array([0]), n_bins=0)


def test_metrics_do_not_modify_inputs():
    probs, labels = _random_probs(50, 3, seed=6)
    p0, y0 = probs.copy(), labels.copy()
    calibration_summary(probs, labels)
    np.testing.assert_array_equal(probs, p0)
    np.testing.assert_array_equal(labels, y0)


# ---- calibrators ------------------------------------------------------------------------------


def test_temperature_hand_computed_optimum():
    # identical logits (0, a) for all samples and a fraction q of class 1:
    # the NLL optimum has sigmoid(a / T) = q, i.e. T = a / logit(q)
    a, q = 4.0, 0.8
    logits = np.tile([0.0, a], (10, 1))
    labels = np.array([1] * 8 + [0] * 2)
    t = TemperatureScaling().fit(logits, labels).temperature_
    assert t == pytest.approx(a / np.log(q / (1 - q)), rel=1e-5)


def test_temperature_recovers_generating_temperature():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(4000, 4)) * 3
    true_p = softmax(z / 2.5, axis=1)
    y = (true_p.cumsum(1) > rng.random((4000, 1))).argmax(1)
    assert TemperatureScaling().fit(z, y).temperature_ == pytest.approx(2.5, rel=0.1)


def test_vector_scaling_gradient_and_likelihood():
    rng = np.random.default_rng(8)
    z = rng.normal(size=(2000, 3)) * 2
    w, b = np.array([0.5, 1.0, 1.5]), np.array([0.3, -0.2, 0.0])
    p = softmax(z * w + b, axis=1)
    y = (p.cumsum(1) > rng.random((2000, 1))).argmax(1)
    vs = VectorScaling().fit(z, y)
    # softmax is invariant to a common bias shift: compare the identifiable differences
    np.testing.assert_allclose(vs.weights_, w, atol=0.15)
    np.testing.assert_allclose(vs.bias_ - vs.bias_.mean(), b - b.mean(), atol=0.15)
    ts = TemperatureScaling().fit(z, y)
    # vector scaling contains temperature scaling: its calibration NLL cannot be worse
    assert negative_log_likelihood(vs.transform(z), y) <= negative_log_likelihood(ts.transform(z), y) + 1e-9


def test_histogram_binning_hand_computed():
    # binary, 2 bins on p_k: class-1 probabilities .2,.3 (bin 0) and .7,.9 (bin 1)
    p1 = np.array([0.2, 0.3, 0.7, 0.9])
    logits = np.log(np.stack([1 - p1, p1], axis=1))
    labels = np.array([0, 1, 1, 1])
    hb = HistogramBinning(n_bins=2).fit(logits, labels)
    # class 1: bin0 freq 1/2, bin1 freq 1; class 0 (p0 = .8,.7,.3,.1): bin1 {.8,.7} freq 1/2, bin0 {.3,.1} freq 0
    np.testing.assert_allclose(hb.bin_values_, [[0.0, 0.5], [0.5, 1.0]])
    out = hb.transform(np.log([[0.6, 0.4]]))  # p1=.4 -> bin0 -> .5; p0=.6 -> bin1 -> .5
    np.testing.assert_allclose(out, [[0.5, 0.5]])


def test_isotonic_is_monotone_and_normalised():
    probs, labels = _random_probs(500, 3, seed=9)
    logits = np.log(probs)
    iso = IsotonicCalibration().fit(logits, labels)
    out = iso.transform(logits)
    np.testing.assert_allclose(out.sum(1), 1.0)
    grid = np.linspace(0.01, 0.98, 50)
    assert np.all(np.diff(iso.regressors_[0].predict(grid)) >= 0)


@pytest.mark.parametrize("method", ["temperature", "vector", "isotonic", "histogram"])
def test_calibrators_improve_held_out_nll_on_miscalibrated_model(method):
    rng = np.random.default_rng(10)
    z = rng.normal(size=(3000, 3)) * 3
    p = softmax(z / 3, axis=1)  # overconfident logits
    y = (p.cumsum(1) > rng.random((3000, 1))).argmax(1)
    cal = make_predictions(z[:1500], labels=y[:1500])
    test = make_predictions(z[1500:], labels=y[1500:])
    result = evaluate_calibration(cal, test, method=method)
    assert result.after["ece"] < result.before["ece"]
    assert result.after["nll"] < result.before["nll"]
    np.testing.assert_allclose(result.probs_after.sum(1), 1.0, atol=1e-9)


def test_calibrator_uses_only_cal_data():
    # changing test labels must not change the fitted calibrator
    rng = np.random.default_rng(11)
    z = rng.normal(size=(200, 2)) * 2
    y = rng.integers(0, 2, 200)
    cal = make_predictions(z[:100], labels=y[:100])
    t1 = evaluate_calibration(cal, make_predictions(z[100:], labels=y[100:])).parameters["temperature"]
    t2 = evaluate_calibration(cal, make_predictions(z[100:], labels=1 - y[100:])).parameters["temperature"]
    assert t1 == t2


def test_temperature_with_sample_axis_and_errors():
    rng = np.random.default_rng(12)
    z = rng.normal(size=(5, 100, 3))
    y = rng.integers(0, 3, 100)
    ts = TemperatureScaling().fit(z, y)
    assert ts.transform(z).shape == (100, 3)
    with pytest.raises(MedsureInputError, match=r"logits: got K=2 classes; expected K=3"):
        ts.transform(z[..., :2])
    with pytest.raises(MedsureInputError, match=r"TemperatureScaling: got an unfitted calibrator; expected a fitted"):
        TemperatureScaling().transform(z)
    with pytest.raises(MedsureInputError, match=r"method: got 'platt'; expected one of histogram, isotonic"):
        make_calibrator("platt")


def test_vector_scaling_applies_to_samples_as_it_was_fitted():
    # fitted on the sample-mean logits: transforming samples must equal transforming their mean
    rng = np.random.default_rng(13)
    z = rng.normal(size=(6, 200, 3)) * 3
    y = rng.integers(0, 3, 200)
    vs = VectorScaling().fit(z, y)
    np.testing.assert_allclose(vs.transform(z), vs.transform(z.mean(axis=0)), rtol=1e-12)


def test_calibrators_refuse_an_empty_calibration_set():
    with pytest.raises(MedsureInputError, match=r"labels: got 0 calibration samples; expected .*\(N >= 1\)"):
        TemperatureScaling().fit(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
