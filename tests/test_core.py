"""medsure.core: each shared primitive pinned against its reference library on the same inputs
(hand-computed tiny cases first, in MONAI's manner, then random cases), and the analyses that
use it shown to agree with it."""

from __future__ import annotations

import ast
import pathlib
import warnings

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from medsure import core
from medsure.artifact import make_predictions
from medsure.errors import MedsureInputError

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "medsure"
LOG2 = float(np.log(2.0))


def _random_probs(shape: tuple[int, ...], axis: int, seed: int, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return core.softmax(rng.normal(scale=2.0, size=shape), axis=axis).astype(dtype)


# ---- softmax ----------------------------------------------------------------------------------


def test_softmax_hand_values_and_stability():
    np.testing.assert_allclose(core.softmax(np.array([0.0, np.log(3.0)])), [0.25, 0.75])
    # large logits do not overflow: shift by the max first
    np.testing.assert_allclose(core.softmax(np.array([1000.0, 1000.0])), [0.5, 0.5])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_matches_scipy_and_keeps_input_and_dtype(axis):
    x = np.random.default_rng(0).normal(scale=5, size=(4, 5, 3))
    before = x.copy()
    np.testing.assert_allclose(core.softmax(x, axis=axis), scipy.special.softmax(x, axis=axis), rtol=1e-12)
    np.testing.assert_array_equal(x, before)
    assert core.softmax(x.astype(np.float32), axis=axis).dtype == np.float32


def test_artifact_softmax_is_the_core_one():
    from medsure import artifact

    assert artifact.softmax is core.softmax


def test_no_module_imports_softmax_from_artifact():
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and node.module == "medsure.artifact"
        and any(alias.name == "softmax" for alias in node.names)
    ]
    assert offenders == []


# ---- entropy ----------------------------------------------------------------------------------


def test_entropy_hand_values():
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    expected = [LOG2, 0.0, -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))]
    np.testing.assert_allclose(core.entropy(probs, axis=1), expected, atol=1e-15)
    np.testing.assert_allclose(core.entropy(np.full(7, 1 / 7)), np.log(7), rtol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_entropy_matches_scipy_in_both_precisions(axis):
    probs = _random_probs((6, 5, 4), axis=axis, seed=1)
    ref = scipy.stats.entropy(probs, axis=axis)
    np.testing.assert_allclose(core.entropy(probs, axis=axis), ref, rtol=1e-12)
    low = core.entropy(probs, axis=axis, dtype=np.float32)
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, ref, rtol=1e-5, atol=1e-6)


def test_csf_and_segmentation_entropies_are_the_core_one():
    from medsure.failure.csf import cam_concentration, predictive_entropy
    from medsure.segmentation.uncertainty import entropy as pixel_entropy

    logits = np.random.default_rng(2).normal(size=(20, 4))
    np.testing.assert_array_equal(predictive_entropy(logits), core.entropy(core.softmax(logits, axis=1), axis=1))
    probs = _random_probs((2, 3, 4, 4), axis=1, seed=3, dtype=np.float32)
    np.testing.assert_array_equal(pixel_entropy(probs), core.entropy(probs, axis=1, dtype=np.float32))
    cams = np.random.default_rng(4).random((3, 4, 4))
    flat = cams.reshape(3, -1)
    np.testing.assert_allclose(cam_concentration(cams), 1 - scipy.stats.entropy(flat, axis=1) / np.log(16), rtol=1e-12)


# ---- entropy decomposition -------------------------------------------------------------------


def test_decomposition_hand_values():
    # case 0: two confident samples that disagree -> total log 2, aleatoric 0, MI log 2
    # case 1: identical samples -> MI exactly 0
    samples = np.array([[[1.0, 0.0], [0.3, 0.7]], [[0.0, 1.0], [0.3, 0.7]]])  # (T=2, N=2, K=2)
    parts = core.entropy_decomposition(samples, sample_axis=0, class_axis=2)
    h = -(0.3 * np.log(0.3) + 0.7 * np.log(0.7))
    np.testing.assert_allclose(parts.total, [LOG2, h], atol=1e-12)
    np.testing.assert_allclose(parts.aleatoric, [0.0, h], atol=1e-12)
    np.testing.assert_allclose(parts.epistemic, [LOG2, 0.0], atol=1e-12)
    np.testing.assert_allclose(parts.mean_probs, [[0.5, 0.5], [0.3, 0.7]])


def test_decomposition_matches_torch_for_any_axes():
    probs = _random_probs((5, 3, 4, 2, 2), axis=2, seed=5)  # (T, N, K, H, W)
    p = torch.from_numpy(probs)
    mean = p.mean(dim=0)
    total_ref = torch.distributions.Categorical(probs=mean.movedim(1, -1)).entropy().numpy()
    aleatoric_ref = torch.distributions.Categorical(probs=p.movedim(2, -1)).entropy().mean(dim=0).numpy()
    parts = core.entropy_decomposition(probs, sample_axis=0, class_axis=2)
    np.testing.assert_allclose(parts.total, total_ref, rtol=1e-10)
    np.testing.assert_allclose(parts.aleatoric, aleatoric_ref, rtol=1e-10)
    np.testing.assert_allclose(parts.epistemic, np.maximum(total_ref - aleatoric_ref, 0), atol=1e-12)
    assert np.all(parts.epistemic >= 0)
    # the same numbers with the axes moved: (N, H, K, W, T), class axis before/after the sample axis
    moved = np.moveaxis(probs, (0, 2), (4, 2)).transpose(0, 2, 1, 3, 4)  # (N, K, H, W, T)
    other = core.entropy_decomposition(moved, sample_axis=-1, class_axis=1)
    np.testing.assert_allclose(other.total, parts.total, rtol=1e-12)
    np.testing.assert_allclose(other.aleatoric, parts.aleatoric, rtol=1e-12)
    with pytest.raises(MedsureInputError, match="sample_axis and class_axis"):
        core.entropy_decomposition(probs, sample_axis=2, class_axis=2)


def test_csf_and_segmentation_decompositions_are_the_core_one():
    from medsure.failure.csf import sample_expected_entropy, sample_mutual_information, sample_predictive_entropy
    from medsure.segmentation.uncertainty import uncertainty_maps

    logits = np.random.default_rng(6).normal(size=(4, 10, 3))
    parts = core.entropy_decomposition(core.softmax(logits, axis=2), sample_axis=0, class_axis=2)
    np.testing.assert_array_equal(sample_predictive_entropy(logits), parts.total)
    np.testing.assert_array_equal(sample_expected_entropy(logits), parts.aleatoric)
    np.testing.assert_array_equal(sample_mutual_information(logits), parts.epistemic)
    seg_logits = np.random.default_rng(7).normal(size=(3, 2, 3, 4, 4)).astype(np.float32)
    maps = uncertainty_maps(make_predictions(seg_logits, masks=np.zeros((2, 4, 4), np.int64), sample_kind="mc_dropout"))
    seg = core.entropy_decomposition(core.softmax(seg_logits, axis=2), sample_axis=0, class_axis=2, dtype=np.float32)
    np.testing.assert_array_equal(maps["entropy"], seg.total)
    np.testing.assert_array_equal(maps["mutual_information"], seg.epistemic)
    assert maps["entropy"].dtype == np.float32


# ---- AUROC ----------------------------------------------------------------------------------


def test_binary_auroc_hand_values_with_ties():
    # positives 0.8, 0.5; negatives 0.5, 0.1: pairs (0.8>0.5) 1, (0.8>0.1) 1, (0.5=0.5) 1/2, (0.5>0.1) 1
    assert core.binary_auroc(np.array([0.8, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(3.5 / 4)
    assert core.binary_auroc(np.array([1.0, 1.0]), np.array([1, 0])) == 0.5


def test_binary_auroc_undefined_is_nan():
    assert np.isnan(core.binary_auroc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert np.isnan(core.binary_auroc(np.array([0.1, 0.2]), np.array([0, 0])))
    assert np.isnan(core.binary_auroc(np.zeros(0), np.zeros(0, bool)))


@pytest.mark.parametrize("seed", range(4))
def test_binary_auroc_matches_sklearn_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    weights = rng.integers(0, 4, size=60).astype(float)
    assert core.binary_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert core.binary_auroc(scores, labels, sample_weight=weights) == pytest.approx(
        roc_auc_score(labels, scores, sample_weight=weights), abs=1e-12
    )


def test_tie_block_auroc_is_batched():
    pos = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])
    neg = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    batch = core.auroc_from_tie_blocks(pos, neg)
    for row in range(2):
        assert batch[row] == pytest.approx(float(core.auroc_from_tie_blocks(pos[row], neg[row])))
    # row 1: the single negative is in the top block, every positive below it -> 0
    assert batch[1] == 0.0


@pytest.mark.parametrize("k", [2, 3, 5])
def test_macro_ovr_auroc_matches_sklearn(k):
    rng = np.random.default_rng(k)
    probs = _random_probs((80, k), axis=1, seed=k)
    labels = np.r_[np.arange(k), rng.integers(0, k, size=80 - k)]
    ref = (
        roc_auc_score(labels, probs[:, 1])
        if k == 2
        else roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    )
    assert core.macro_ovr_auroc(probs, labels) == pytest.approx(ref, abs=1e-12)
    assert np.isnan(core.macro_ovr_auroc(probs, np.where(labels == 0, 1, labels)))  # class 0 absent


def test_every_auroc_in_medsure_is_the_core_one():
    from medsure.evaluation import classification_summary
    from medsure.failure.metrics import auroc_failure, bootstrap_ci
    from medsure.segmentation.shift import shift_auroc
    from medsure.training.metrics import auc

    rng = np.random.default_rng(8)
    logits = rng.normal(size=(50, 3))
    labels = np.r_[0, 1, 2, rng.integers(0, 3, size=47)]
    probs = core.softmax(logits, axis=1)
    assert auc(logits, labels) == pytest.approx(core.macro_ovr_auroc(probs, labels), abs=1e-12)
    assert np.isnan(auc(logits, np.zeros(50, np.int64)))
    summary = classification_summary(make_predictions(logits.astype(np.float32), labels=labels))
    assert summary["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"), abs=1e-6)
    assert classification_summary(make_predictions(logits.astype(np.float32), labels=np.zeros(50, int)))["auc"] is None
    conf = np.round(rng.random(50), 1)
    errors = rng.random(50) < 0.3
    assert auroc_failure(conf, errors) == pytest.approx(roc_auc_score(~errors, conf), abs=1e-12)
    assert shift_auroc(conf[:20], conf[20:]) == pytest.approx(
        roc_auc_score(np.r_[np.zeros(20), np.ones(30)], conf), abs=1e-12
    )
    # the bootstrap's vectorised AUROC (tie blocks, core.auroc_from_tie_blocks): with counts of all
    # ones every resample is the data itself, so the interval collapses onto the AUROC
    ones = np.ones((3, 50), np.int64)
    ci = bootstrap_ci(conf, errors, counts=ones)
    assert ci["auroc_f"][0] == pytest.approx(auroc_failure(conf, errors), abs=1e-12)


# ---- Dice -----------------------------------------------------------------------------------


def test_dice_hand_values_and_empty_convention():
    masks = np.zeros((3, 2, 2), np.int64)
    pred = np.zeros((3, 2, 2), np.int64)
    masks[0, 0, :] = 1  # image 0: truth row 0, prediction one pixel of it -> 2*1/(1+2)
    pred[0, 0, 0] = 1
    pred[1, 1, 1] = 1  # image 1: empty truth, one predicted pixel -> 0 (a false positive)
    # image 2: both empty -> NaN (undefined)
    dice = core.dice_per_label(pred, masks, 2)
    np.testing.assert_allclose(dice[:, 0], [2 / 3, 0.0, np.nan])
    assert core.mean_dice(dice) == pytest.approx(1 / 3)  # the NaN image is excluded, not scored 1


def test_mean_dice_is_macro_over_labels():
    dice = np.array([[1.0, np.nan], [0.5, np.nan], [0.0, 0.2]])
    # label 1: mean(1, 0.5, 0) = 0.5; label 2: 0.2 (one defined image) -> (0.5 + 0.2) / 2
    assert core.mean_dice(dice) == pytest.approx(0.35)
    assert np.isnan(core.mean_dice(np.full((2, 2), np.nan)))


def test_dice_matches_monai_compute_dice():
    from monai.metrics import compute_dice

    rng = np.random.default_rng(9)
    k = 4
    masks = rng.integers(0, k, size=(6, 8, 8))
    pred = np.where(rng.random((6, 8, 8)) < 0.7, masks, rng.integers(0, k, size=(6, 8, 8)))
    masks[0] = 0  # image 0: only background in the truth
    pred[0] = 0  # ... and in the prediction: every label undefined
    masks[1][masks[1] == 3] = 0  # image 1: label 3 absent from truth but predicted
    one_hot = lambda x: torch.from_numpy((x[:, None] == np.arange(k)[None, :, None, None]).astype(np.float32))  # noqa: E731
    ref = compute_dice(one_hot(pred), one_hot(masks), include_background=False, ignore_empty=False).double().numpy()
    both_empty = np.stack(
        [((pred == c).sum(axis=(1, 2)) == 0) & ((masks == c).sum(axis=(1, 2)) == 0) for c in range(1, k)], axis=1
    )
    ref[both_empty] = np.nan  # MONAI scores both-empty 1; medsure: undefined
    ours = core.dice_per_label(pred, masks, k)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, equal_nan=True)
    assert np.isnan(ours[0]).all() and ours[1, 2] == 0.0


def test_dice_rejects_bad_label_maps():
    with pytest.raises(MedsureInputError, match="labels in"):
        core.dice_per_label(np.full((1, 2, 2), 3), np.zeros((1, 2, 2), int), 2)
    with pytest.raises(MedsureInputError, match="shapes"):
        core.dice_per_label(np.zeros((1, 2, 2), int), np.zeros((1, 2, 3), int), 2)


def test_trainer_validation_dice_equals_report_dice_with_empty_masks():
    """The number early stopping watches is the number the report shows (it was not: the
    trainer scored an empty prediction of an empty mask 1, the report left it out)."""
    from medsure.evaluation import segmentation_summary
    from medsure.segmentation.evaluate import evaluate_segmentation
    from medsure.training.metrics import mean_dice

    rng = np.random.default_rng(10)
    n, k, h, w = 8, 3, 8, 8
    logits = rng.normal(size=(n, k, h, w)).astype(np.float32)
    logits[:3, 0] += 10.0  # images 0-2 predict only background ...
    masks = rng.integers(0, k, size=(n, h, w))
    masks[:3] = 0  # ... and have empty masks: Dice undefined there
    masks[3] = np.where(masks[3] == 2, 0, masks[3])  # label 2 absent from image 3's truth
    predicted = logits.argmax(axis=1)
    trainer_dice = mean_dice(predicted, masks, k)
    pred = make_predictions(logits, masks=masks)
    assert segmentation_summary(pred)["mean_dice"] == pytest.approx(trainer_dice, abs=1e-12)
    assert evaluate_segmentation(pred).dice_mean == pytest.approx(trainer_dice, abs=1e-12)
    # the old trainer convention (both empty = 1) gives a larger number on these data
    per_label = core.dice_per_label(predicted, masks, k)
    assert float(np.mean(np.nan_to_num(per_label, nan=1.0))) > trainer_dice + 0.05


def test_segmentation_dice_functions_are_the_core_ones():
    from medsure.segmentation.metrics import dice_per_label, image_dice

    rng = np.random.default_rng(11)
    masks, pred = rng.integers(0, 3, size=(2, 5, 6, 6))
    np.testing.assert_array_equal(dice_per_label(pred, masks, 3), core.dice_per_label(pred, masks, 3))
    dice = np.array([[0.5, np.nan], [np.nan, np.nan]])
    np.testing.assert_array_equal(image_dice(dice), [0.5, np.nan])


# ---- NaN-aware mean ---------------------------------------------------------------------------


def test_nanmean_hand_values_and_all_nan():
    assert core.nanmean(np.array([1.0, np.nan, 3.0, np.inf])) == 2.0  # NaN and inf skipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" warning
        assert np.isnan(core.nanmean(np.array([np.nan, np.nan])))
        assert np.isnan(core.nanmean(np.zeros(0)))
        np.testing.assert_array_equal(core.nanmean(np.array([[1.0, np.nan], [3.0, np.nan]]), axis=0), [2.0, np.nan])
    assert core.undefined_as_none(np.nan) is None and core.undefined_as_none(np.float32(0.5)) == 0.5


def test_nanmean_matches_numpy_nanmean():
    values = np.random.default_rng(12).normal(size=(7, 9))
    values[values > 1.2] = np.nan
    np.testing.assert_allclose(core.nanmean(values, axis=1), np.nanmean(values, axis=1), rtol=1e-12)
    assert core.nanmean(values) == pytest.approx(np.nanmean(values), rel=1e-12)


# ---- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_chunks_draw_the_same_resamples_as_one_draw():
    counts = core.bootstrap_counts(30, 1000, seed=3)
    assert counts.shape == (1000, 30) and np.all(counts.sum(axis=1) == 30)
    seen = []
    core.percentile_bootstrap(
        lambda w: seen.append(w.copy()) or {"x": np.zeros(w.shape[0])}, 30, n_boot=1000, seed=3, chunk=300
    )
    np.testing.assert_array_equal(np.concatenate(seen), counts)
    assert [s.shape[0] for s in seen] == [300, 300, 300, 100]


def test_percentile_bootstrap_equals_the_direct_loop_and_scipy():
    x = np.random.default_rng(13).normal(size=200)
    weighted_mean = lambda w: {"mean": (w * x).sum(axis=1) / w.sum(axis=1)}  # noqa: E731
    ci = core.percentile_bootstrap(weighted_mean, x.size, n_boot=4000, level=0.9, seed=0)["mean"]
    counts = core.bootstrap_counts(x.size, 4000, seed=0)
    direct = np.quantile([x[np.repeat(np.arange(x.size), row)].mean() for row in counts], [0.05, 0.95])
    np.testing.assert_allclose(ci, direct, rtol=1e-12)
    # scipy's percentile bootstrap draws other resamples: it agrees within Monte-Carlo error
    ref = scipy.stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=4000,
        confidence_level=0.9,
        method="percentile",
        random_state=np.random.default_rng(1),
    ).confidence_interval
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert abs(ci[0] - ref.low) < 0.1 * se and abs(ci[1] - ref.high) < 0.1 * se


def test_percentile_bootstrap_drops_undefined_and_checks_counts():
    undefined = core.percentile_bootstrap(lambda w: {"m": np.full(w.shape[0], np.nan)}, 5, n_boot=10)
    assert undefined == {"m": None}
    with pytest.raises(MedsureInputError, match="counts"):
        core.percentile_bootstrap(lambda w: {}, 5, counts=np.ones((3, 4), int))
    with pytest.raises(MedsureInputError, match="bootstrap"):
        core.bootstrap_counts(0, 10)


# ---- binned calibration error ------------------------------------------------------------------


def test_calibration_error_hand_values():
    conf = np.array([0.95, 0.95, 0.95, 0.55])
    hit = np.array([1, 1, 0, 1])
    # equal width, B = 10: bin 9 acc 2/3 conf .95 weight 3/4; bin 5 acc 1 conf .55 weight 1/4
    assert core.calibration_error(conf, hit, n_bins=10) == pytest.approx(0.75 * (0.95 - 2 / 3) + 0.25 * 0.45)
    assert core.calibration_error(conf, hit, n_bins=10, norm="max") == pytest.approx(0.45)
    assert core.calibration_error(conf, hit, n_bins=10, norm="bin_mean") == pytest.approx(((0.95 - 2 / 3) + 0.45) / 2)
    # a score on an edge goes to the lower bin: (lo, hi]
    assert core.binned_calibration(np.array([0.5]), np.array([1]), n_bins=2).count.tolist() == [1, 0]
    assert np.isnan(core.calibration_error(np.zeros(0), np.zeros(0)))


def test_calibration_error_matches_torchmetrics():
    import torchmetrics.functional.classification as tm

    rng = np.random.default_rng(14)
    scores = rng.random(500)
    outcome = (rng.random(500) < scores**1.5).astype(np.int64)
    for norm in ("l1", "max"):
        ref = tm.binary_calibration_error(torch.from_numpy(scores), torch.from_numpy(outcome), n_bins=12, norm=norm)
        assert core.calibration_error(scores, outcome, n_bins=12, norm=norm) == pytest.approx(float(ref), abs=1e-6)


def test_equal_mass_bins_match_sklearn_and_keep_ties_together():
    rng = np.random.default_rng(15)
    scores = rng.random(300)
    outcome = rng.random(300) < scores
    bins = core.binned_calibration(scores, outcome, n_bins=6, strategy="quantile")
    prob_true, prob_pred = calibration_curve(outcome, scores, n_bins=6, strategy="quantile")
    np.testing.assert_allclose(bins.mean_outcome[bins.nonempty], prob_true, rtol=1e-12)
    np.testing.assert_allclose(bins.mean_score[bins.nonempty], prob_pred, rtol=1e-12)
    # many tied scores (pixels at confidence 1.0): the error does not depend on the data's order
    tied = np.r_[np.ones(200), rng.random(100)]
    hits = rng.random(300) < 0.8
    order = rng.permutation(300)
    a = core.calibration_error(tied, hits, n_bins=5, strategy="quantile")
    b = core.calibration_error(tied[order], hits[order], n_bins=5, strategy="quantile")
    assert a == pytest.approx(b, abs=1e-15)


def test_pixel_and_classifier_ece_share_one_definition():
    from medsure.calibration.metrics import expected_calibration_error, maximum_calibration_error
    from medsure.segmentation.calibration import calibration_errors

    rng = np.random.default_rng(16)
    conf = rng.uniform(0.5, 1.0, size=400)
    labels = rng.integers(0, 2, size=400)
    probs = np.stack([1 - conf, conf], axis=1)  # top label 1
    correct = labels == 1
    pixel = calibration_errors(conf, correct, n_bins=10)
    assert set(pixel) == {"ece", "ece_equal_mass", "mce", "n"}  # "ace" is only Nixon's class-wise ACE
    assert pixel["ece"] == pytest.approx(expected_calibration_error(probs, labels, n_bins=10), abs=1e-12)
    assert pixel["ece_equal_mass"] == pytest.approx(
        expected_calibration_error(probs, labels, n_bins=10, strategy="quantile"), abs=1e-12
    )
    assert pixel["mce"] == pytest.approx(maximum_calibration_error(probs, labels, n_bins=10), abs=1e-12)
