"""Segmentation uncertainty: pure functions on hand-computed tiny masks and reference checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist
from sklearn.metrics import roc_auc_score

from medsure.artifact import make_predictions
from medsure.errors import MedsureInputError
from medsure.segmentation.calibration import calibration_bins, calibration_errors, pixel_calibration
from medsure.segmentation.conformal_mask import ConformalMask, crc_threshold, fnr, fnr_curve
from medsure.segmentation.metrics import (
    DicePredictor,
    dice_per_label,
    hd95_per_label,
    image_dice,
    segment_calibration,
    uncertainty_dice_association,
    uncertainty_error_overlap,
)
from medsure.segmentation.regions import boundary_band, label_boundaries
from medsure.segmentation.shift import shift_auroc
from medsure.segmentation.uncertainty import (
    entropy,
    expected_entropy,
    image_uncertainty,
    mutual_information,
    predictive_entropy,
    uncertainty_maps,
)

LOG2 = float(np.log(2.0))


# ---- uncertainty maps ---------------------------------------------------------------------


def test_entropy_hand_values():
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]], np.float32).T[None, :, :, None]  # (1,2,3,1)
    h = entropy(probs, axis=1)
    expected = [LOG2, 0.0, -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))]
    np.testing.assert_allclose(h[0, :, 0], expected, atol=1e-6)


def test_mutual_information_disagreeing_and_agreeing_samples():
    # pixel 0: two confident samples that disagree -> MI = log 2; pixel 1: samples agree -> MI = 0
    s0 = np.array([[1.0, 0.0], [0.3, 0.7]])
    s1 = np.array([[0.0, 1.0], [0.3, 0.7]])
    sample_probs = np.stack([s0.T, s1.T])[:, None, :, :, None]  # (T=2, N=1, K=2, H=2, W=1)
    np.testing.assert_allclose(predictive_entropy(sample_probs)[0, 0, 0], LOG2, atol=1e-6)
    np.testing.assert_allclose(expected_entropy(sample_probs)[0, 0, 0], 0.0, atol=1e-6)
    mi = mutual_information(sample_probs)[0, :, 0]
    np.testing.assert_allclose(mi, [LOG2, 0.0], atol=1e-6)


def test_uncertainty_maps_decompose_and_match_artifact():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3, 3, 5, 6)).astype(np.float32)
    pred = make_predictions(logits, masks=rng.integers(0, 3, (3, 5, 6)), sample_kind="ensemble")
    maps = uncertainty_maps(pred)
    np.testing.assert_allclose(maps["probabilities"], pred.probabilities(), atol=1e-6)
    np.testing.assert_allclose(maps["entropy"], maps["expected_entropy"] + maps["mutual_information"], atol=1e-5)
    assert np.all(maps["mutual_information"] >= 0) and np.all(maps["entropy"] <= np.log(3) + 1e-6)
    np.testing.assert_array_equal(maps["predicted"], pred.probabilities().argmax(axis=1))
    single = uncertainty_maps(pred.without_samples())
    assert np.all(single["mutual_information"] == 0)


def test_image_uncertainty_foreground_mean_and_fallback():
    umap = np.array([[[1.0, 2.0], [3.0, 6.0]], [[1.0, 1.0], [1.0, 5.0]]])
    predicted = np.array([[[0, 1], [0, 1]], [[0, 0], [0, 0]]])
    np.testing.assert_allclose(image_uncertainty(umap), [3.0, 2.0])
    np.testing.assert_allclose(image_uncertainty(umap, predicted, reduce="foreground_mean"), [4.0, 2.0])
    with pytest.raises(MedsureInputError):
        image_uncertainty(umap, reduce="foreground_mean")


# ---- regions ------------------------------------------------------------------------------


def test_boundaries_and_band_of_a_square():
    labels = np.zeros((1, 6, 6), np.int64)
    labels[0, 2:4, 2:4] = 1
    edges = label_boundaries(labels)[0]
    expected = np.zeros((6, 6), bool)
    expected[2:4, 2:4] = True  # inner contour: all four square pixels
    expected[1, 2:4] = expected[4, 2:4] = True  # outer 4-neighbours, no corners
    expected[2:4, 1] = expected[2:4, 4] = True
    np.testing.assert_array_equal(edges, expected)
    band = boundary_band(labels, labels, width=1)[0]
    np.testing.assert_array_equal(band, ndimage.binary_dilation(expected, np.ones((3, 3), bool)))
    assert not boundary_band(np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int), width=2).any()
    # a structure touching the image border has no boundary along the border itself
    border = np.zeros((1, 3, 3), np.int64)
    border[0, :, 0] = 1
    assert not label_boundaries(border)[0, :, 2].any()


# ---- calibration --------------------------------------------------------------------------


def test_ece_mce_hand_computed():
    conf = np.array([0.95, 0.95, 0.95, 0.55])
    correct = np.array([1, 1, 0, 1], bool)
    out = calibration_errors(conf, correct, n_bins=10)
    # bin 9: acc 2/3, conf .95, weight 3/4; bin 5: acc 1, conf .55, weight 1/4
    assert out["ece"] == pytest.approx(0.75 * (0.95 - 2 / 3) + 0.25 * 0.45)
    assert out["mce"] == pytest.approx(0.45)


def test_ece_equal_mass_bins_hand_computed():
    conf = np.array([0.6, 0.9, 0.7, 0.8])
    correct = np.array([0, 1, 1, 1], bool)
    bins = calibration_bins(conf, correct, n_bins=2, strategy="quantile")
    np.testing.assert_array_equal(bins["count"], [2, 2])
    np.testing.assert_allclose(bins["confidence"], [0.65, 0.85])
    out = calibration_errors(conf, correct, n_bins=2)
    assert out["ece_equal_mass"] == pytest.approx(0.15)
    assert "ace" not in out  # "ace" names only Nixon's class-wise adaptive error (calibration.metrics)


def test_pixel_calibration_matches_loop_reference_and_region():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 3, 8, 8)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    masks = rng.integers(0, 3, (5, 8, 8))
    conf = probs.max(axis=1).ravel()
    hit = (probs.argmax(axis=1) == masks).ravel()
    ece = 0.0
    for b in range(15):  # slow reference over bins
        lo, hi = b / 15, (b + 1) / 15
        sel = (conf >= lo) & ((conf < hi) if b < 14 else (conf <= hi))
        if sel.any():
            ece += sel.mean() * abs(hit[sel].mean() - conf[sel].mean())
    assert pixel_calibration(probs, masks)["ece"] == pytest.approx(ece, abs=1e-6)
    region = np.zeros(masks.shape, bool)
    region[:, :4] = True
    sub = pixel_calibration(probs, masks, region=region)
    assert sub["n"] == region.sum()
    assert sub["ece"] == pytest.approx(
        calibration_errors(probs.max(axis=1)[:, :4], (probs.argmax(axis=1) == masks)[:, :4])["ece"]
    )


def test_perfectly_calibrated_pixels_have_small_ece():
    rng = np.random.default_rng(4)
    p1 = rng.uniform(0, 1, size=(20, 32, 32))
    masks = (rng.uniform(size=p1.shape) < p1).astype(np.int64)  # labels drawn from the probabilities
    probs = np.stack([1 - p1, p1], axis=1)
    assert pixel_calibration(probs, masks)["ece"] < 0.01
    overconfident = np.stack([1 - np.round(p1), np.round(p1)], axis=1) * 0.98 + 0.01
    assert pixel_calibration(overconfident, masks)["ece"] > 0.15


# ---- Dice, HD95 ---------------------------------------------------------------------------


def test_dice_hand_computed_and_empty_policy():
    pred = np.zeros((3, 4, 4), np.int64)
    gt = np.zeros((3, 4, 4), np.int64)
    pred[0, 0:2, 0:2] = 1
    gt[0, 0:2, 1:3] = 1  # overlap 2 of 4 + 4 -> Dice 0.5
    pred[1, 0, 0] = 1  # false positive on an empty GT -> 0
    dice = dice_per_label(pred, gt, 2)  # image 2: both empty -> NaN
    assert dice.shape == (3, 1)
    assert dice[0, 0] == pytest.approx(0.5) and dice[1, 0] == 0.0 and np.isnan(dice[2, 0])
    np.testing.assert_allclose(image_dice(dice), [0.5, 0.0, np.nan])


def test_dice_agrees_with_a_per_image_loop_on_random_multilabel_maps():
    rng = np.random.default_rng(5)
    pred = rng.integers(0, 4, (6, 10, 10))
    gt = rng.integers(0, 4, (6, 10, 10))
    gt[0] = 0
    pred[0] = 0
    expected = np.full((6, 3), np.nan)
    for i in range(6):
        for j in range(1, 4):
            p, t = pred[i] == j, gt[i] == j
            if p.sum() + t.sum():
                expected[i, j - 1] = 2 * (p & t).sum() / (p.sum() + t.sum())
    np.testing.assert_allclose(dice_per_label(pred, gt, 4), expected, equal_nan=True)


def test_dice_rejects_labels_out_of_range():
    with pytest.raises(MedsureInputError, match="expected labels in"):
        dice_per_label(np.full((1, 2, 2), 2), np.zeros((1, 2, 2), int), 2)


def test_hd95_single_pixels_and_empty_policy():
    pred = np.zeros((3, 8, 8), np.int64)
    gt = np.zeros((3, 8, 8), np.int64)
    pred[0, 2, 2] = 1
    gt[0, 2, 5] = 1  # distance 3
    gt[1, 4, 4] = 1  # prediction empty -> undefined
    hd = hd95_per_label(pred, gt, 2)
    assert hd[0, 0] == pytest.approx(3.0) and np.isnan(hd[1, 0]) and np.isnan(hd[2, 0])
    assert hd95_per_label(pred, gt, 2, spacing=0.5)[0, 0] == pytest.approx(1.5)


def _hd95_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Brute force: contour pixels (mask minus its erosion), all pairwise distances."""

    def edge_points(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m))

    d = cdist(edge_points(a), edge_points(b))
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_hd95_matches_brute_force_on_blobs():
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[:24, :24]
    pred = np.zeros((4, 24, 24), np.int64)
    gt = np.zeros((4, 24, 24), np.int64)
    for i in range(4):  # builds the test fixture only
        cy, cx, r = rng.integers(7, 17), rng.integers(7, 17), rng.integers(3, 7)
        gt[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        pred[i] = (yy - cy - rng.integers(-3, 4)) ** 2 / 1.5 + (xx - cx) ** 2 <= r**2
    hd = hd95_per_label(pred, gt, 2)[:, 0]
    ref = [_hd95_reference(pred[i] == 1, gt[i] == 1) for i in range(4)]
    np.testing.assert_allclose(hd, ref, atol=1e-6)


# ---- segment calibration, UEO, Dice prediction, shift --------------------------------------


def test_segment_calibration_hand_computed():
    p1 = np.array([0.9, 0.8, 0.2, 0.1]).reshape(1, 1, 4)
    probs = np.stack([1 - p1, p1], axis=1)  # (1, 2, 1, 4)
    gt = np.array([[[1, 0, 0, 0]]])
    out = segment_calibration(probs, gt)
    assert out["n_segments"] == 1
    assert out["confidence"][0] == pytest.approx(0.85) and out["dice"][0] == pytest.approx(2 / 3)
    assert out["ece"] == pytest.approx(0.85 - 2 / 3)


def test_segment_calibration_skips_empty_predictions():
    probs = np.zeros((2, 3, 2, 2))
    probs[:, 0] = 1.0
    probs[0, :, 0, 0] = [0.2, 0.7, 0.1]  # image 0 predicts label 1 at one pixel; label 2 nowhere
    gt = np.zeros((2, 2, 2), np.int64)
    gt[0, 0, 0] = 1
    out = segment_calibration(probs, gt)
    assert out["n_segments"] == 1 and out["label"].tolist() == [1] and out["image"].tolist() == [0]
    assert out["ece"] == pytest.approx(1.0 - 0.7)


def test_ueo_hand_computed_curve():
    u = np.array([0.9, 0.1, 0.5, 0.2])
    err = np.array([1, 0, 1, 0], bool)
    out = uncertainty_error_overlap(u, err, thresholds=np.array([0.0, 0.3, 0.6]))
    np.testing.assert_allclose(out["curve"], [2 * 2 / 6, 1.0, 2 * 1 / 3])
    assert out["best"] == 1.0 and out["best_threshold"] == 0.3


def test_ueo_matches_direct_dice_for_every_threshold():
    rng = np.random.default_rng(7)
    u = rng.uniform(size=(3, 9, 9)).round(2)  # rounding creates ties at thresholds
    err = rng.uniform(size=u.shape) < u
    out = uncertainty_error_overlap(u, err, thresholds=25)
    direct = [2 * np.sum((u > t) & err) / (np.sum(u > t) + err.sum()) for t in out["thresholds"]]
    np.testing.assert_allclose(out["curve"], direct)
    assert out["thresholds"][0] == u.min() and out["thresholds"][-1] < u.max()


def test_dice_predictor_recovers_a_line_and_correlations():
    u = np.linspace(0.0, 1.0, 20)
    dice = 0.9 - 0.5 * u
    model = DicePredictor().fit(u, dice)
    assert model.slope_ == pytest.approx(-0.5) and model.intercept_ == pytest.approx(0.9)
    assert model.score(u, dice)["mae"] == pytest.approx(0.0, abs=1e-12)
    assoc = uncertainty_dice_association(u, np.where(u > 0.5, np.nan, dice))
    assert assoc["pearson"] == pytest.approx(-1.0) and assoc["spearman"] == pytest.approx(-1.0)
    assert assoc["n"] == int(np.sum(u <= 0.5))


def test_shift_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(8)
    a = rng.normal(size=40).round(1)
    b = (rng.normal(size=25) + 0.7).round(1)
    expected = roc_auc_score(np.r_[np.zeros(40), np.ones(25)], np.r_[a, b])
    assert shift_auroc(a, b) == pytest.approx(expected)
    assert shift_auroc(np.zeros(3), np.ones(2)) == 1.0


# ---- conformal masks ----------------------------------------------------------------------


def _one_pixel_images(probs_at_gt, n_empty=0):
    n = len(probs_at_gt) + n_empty
    probs = np.zeros((n, 1, 3))
    gt = np.zeros((n, 1, 3), bool)
    probs[: len(probs_at_gt), 0, 0] = probs_at_gt
    gt[: len(probs_at_gt), 0, 0] = True
    return probs, gt


def test_crc_threshold_hand_computed():
    probs, gt = _one_pixel_images([0.2, 0.5, 0.8])
    # n=3, alpha=.5: need R(λ) <= (4*.5-1)/3 = 1/3, R = #(p < λ)/3 -> λ̂ = 0.5
    assert crc_threshold(probs, gt, 0.5) == 0.5
    probs, gt = _one_pixel_images([0.2, 0.5, 0.8], n_empty=1)
    # empty GT counts as FNR 0: n=4, alpha=.6 -> R <= .5 -> λ̂ = .8 ; excluded: n=3 -> R <= .4667 -> .5
    assert crc_threshold(probs, gt, 0.6, empty_gt="zero") == 0.8
    assert crc_threshold(probs, gt, 0.6, empty_gt="exclude") == 0.5
    assert crc_threshold(probs, gt, 0.2) == 0.2  # alpha = 1/(n+1): R must be 0 -> λ̂ = smallest GT prob
    assert crc_threshold(probs, gt, 0.15) == 0.0  # alpha < 1/(n+1): the full mask


def test_crc_threshold_is_the_supremum_of_the_feasible_set():
    rng = np.random.default_rng(9)
    probs = rng.uniform(size=(30, 12, 12)).round(3)
    gt = rng.uniform(size=probs.shape) < probs**2
    gt[:3] = False
    n, alpha = probs.shape[0], 0.1
    lam = crc_threshold(probs, gt, alpha)

    def bound(t):
        return n / (n + 1) * fnr(probs, gt, t).mean() + 1 / (n + 1)

    assert bound(lam) <= alpha
    larger = np.unique(probs[probs > lam])[0]  # the next candidate threshold
    assert bound(larger) > alpha
    grid = np.linspace(0, 1, 57)
    np.testing.assert_allclose(fnr_curve(probs, gt, grid), np.stack([fnr(probs, gt, t) for t in grid], 1))


def test_conformal_mask_per_label_on_predictions():
    rng = np.random.default_rng(10)
    masks = rng.integers(0, 3, (20, 6, 6))
    logits = (np.eye(3)[masks].transpose(0, 3, 1, 2) * 2 + rng.normal(size=(20, 3, 6, 6))).astype(np.float32)
    pred = make_predictions(logits, masks=masks, class_names=["bg", "a", "b"])
    cm = ConformalMask(alpha=0.2).fit(pred)
    probs = pred.probabilities()
    assert cm.lambda_.shape == (2,) and cm.n_cal_.tolist() == [20, 20]
    for j in (1, 2):
        assert cm.lambda_[j - 1] == crc_threshold(probs[:, j], masks == j, 0.2)
    sets = cm.predict(pred)
    assert sets.shape == (20, 2, 6, 6)
    np.testing.assert_allclose(cm.fnr(pred)[:, 1], fnr(probs[:, 2], masks == 2, cm.lambda_[1]))
    with pytest.raises(MedsureInputError, match="alpha"):
        ConformalMask(alpha=1.5).fit(pred)


def test_pixel_ece_equals_classifier_ece_on_pixels_as_samples():
    # one binning convention: every pixel is a sample of the classifier ECE / MCE
    from medsure.calibration.metrics import expected_calibration_error, maximum_calibration_error

    rng = np.random.default_rng(11)
    logits = rng.normal(size=(3, 3, 9, 9)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    masks = rng.integers(0, 3, (3, 9, 9))
    flat_probs = probs.transpose(0, 2, 3, 1).reshape(-1, 3)
    ours = pixel_calibration(probs, masks, n_bins=10)
    assert ours["ece"] == pytest.approx(expected_calibration_error(flat_probs, masks.ravel(), n_bins=10), abs=1e-7)
    assert ours["mce"] == pytest.approx(maximum_calibration_error(flat_probs, masks.ravel(), n_bins=10), abs=1e-7)


def test_image_uncertainty_foreground_weighted_keeps_a_half_seen_miss_visible():
    # image 0: a structure predicted as background with p_fg = 0.4 and high entropy inside it;
    # foreground_mean falls back to the whole-image mean (diluted), the weighted mean does not
    umap = np.zeros((2, 4, 4))
    umap[0, :2, :2] = 0.9
    umap[1] = 0.2
    predicted = np.zeros((2, 4, 4), int)
    fg = np.full((2, 4, 4), 0.0)
    fg[0, :2, :2] = 0.4
    fg[1] = 0.1
    weighted = image_uncertainty(umap, predicted, reduce="foreground_weighted", foreground_prob=fg)
    np.testing.assert_allclose(weighted, [0.9, 0.2])
    np.testing.assert_allclose(image_uncertainty(umap, predicted, reduce="foreground_mean"), [0.9 * 4 / 16, 0.2])
    # no foreground belief anywhere: the plain mean
    np.testing.assert_allclose(
        image_uncertainty(umap, predicted, reduce="foreground_weighted", foreground_prob=np.zeros_like(fg)),
        [0.9 * 4 / 16, 0.2],
    )
    with pytest.raises(MedsureInputError, match="foreground probabilities"):
        image_uncertainty(umap, predicted, reduce="foreground_weighted")


# ---- issue 10: every reduction, estimator vocabulary, one error voice ----------------------------


def test_top_percent_and_max_reductions_hand_computed():
    from medsure.segmentation.uncertainty import REDUCTIONS, TOP_FRACTION

    umap = np.zeros((2, 20, 10))
    umap[0, 0, :3] = [5.0, 3.0, 1.0]  # 200 pixels: the top 1 % are the 2 largest
    umap[1] = 0.5
    assert round(TOP_FRACTION * 200) == 2
    np.testing.assert_allclose(image_uncertainty(umap, reduce="max"), [5.0, 0.5])
    np.testing.assert_allclose(image_uncertainty(umap, reduce="top_percent"), [4.0, 0.5])
    assert set(REDUCTIONS) == {"mean", "foreground_mean", "foreground_weighted", "top_percent", "max"}


def test_unknown_reduction_is_one_clear_error():
    with pytest.raises(MedsureInputError, match=r"^reduce: got 'median'; expected one of 'mean', "):
        image_uncertainty(np.zeros((1, 2, 2)), reduce="median")


def test_conformal_mask_uses_fit_and_checks_declared_parameters_in_fit():
    from medsure.validation import Interval, Options

    assert not hasattr(ConformalMask, "calibrate")  # conformal estimators fit thresholds
    assert isinstance(ConformalMask._parameter_constraints["alpha"][0], Interval)
    assert isinstance(ConformalMask._parameter_constraints["empty_gt"][0], Options)
    rng = np.random.default_rng(3)
    masks = rng.integers(0, 2, (10, 4, 4))
    pred = make_predictions(rng.normal(size=(10, 2, 4, 4)).astype(np.float32), masks=masks)
    bad = ConformalMask(alpha=0.2, empty_gt="drop")  # the constructor only stores
    with pytest.raises(MedsureInputError, match=r"ConformalMask\(empty_gt=\.\.\.\): got 'drop'; expected"):
        bad.fit(pred)
    with pytest.raises(MedsureInputError, match="Call fit"):
        ConformalMask(alpha=0.2).predict(pred)


def test_dice_predictor_declares_constraints_and_speaks_the_error_format():
    from medsure.segmentation.metrics import DicePredictor

    assert DicePredictor._parameter_constraints == {}
    with pytest.raises(
        MedsureInputError, match=r"^DicePredictor.fit: got 1 image\(s\) with a defined Dice; expected at least 2"
    ):
        DicePredictor().fit(np.array([0.1, 0.2]), np.array([0.5, np.nan]))
    with pytest.raises(MedsureInputError, match="Call fit first"):
        DicePredictor().predict(np.array([0.1]))


def test_require_segmentation_speaks_the_error_format():
    from medsure.segmentation.evaluate import require_segmentation

    cls = make_predictions(np.zeros((3, 2), np.float32), labels=np.array([0, 1, 0]))
    with pytest.raises(MedsureInputError, match=r"^--pred: got a classification artifact; expected segmentation"):
        require_segmentation(cls, "--pred")


def test_shift_auroc_refuses_an_empty_group_and_non_finite_scores():
    with pytest.raises(
        MedsureInputError,
        match=r"^shift AUROC images: got 0 in-distribution and 2 shifted; expected at least one image in each group$",
    ):
        shift_auroc(np.zeros(0), np.ones(2))
    with pytest.raises(
        MedsureInputError, match=r"^shifted scores: got 1 NaN or infinite value\(s\), first at index \(1,\)"
    ):
        shift_auroc(np.zeros(3), np.array([1.0, np.nan]))
