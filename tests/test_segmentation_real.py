"""Segmentation uncertainty on REAL predictions (tests/realpreds.py; skipped when data is absent).

Conformal masks: the CRC guarantee E[FNR_test] <= alpha holds for every random cal/test split of
a fixed pool of images (the split makes the images exchangeable), so the mean test FNR averaged
over R independent seeded splits estimates a quantity that is <= alpha. The only slack is the
Monte-Carlo error of that average: the R per-split means are i.i.d. given the pool, so we allow
``4 * sd / sqrt(R)`` (one-sided normal tail ~3e-5; each per-split mean averages dozens of
images, so the normal approximation is good).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medsure.artifact import Predictions, save_predictions
from medsure.cli import main
from medsure.segmentation.conformal_mask import crc_threshold, fnr
from medsure.segmentation.evaluate import evaluate_segmentation, image_scores
from medsure.segmentation.uncertainty import uncertainty_maps

realpreds = pytest.importorskip("realpreds", reason="tests/realpreds.py (real prediction cache) is missing")

N_SPLITS = 200
ALPHA = 0.1


def _pool(name: str) -> tuple[np.ndarray, np.ndarray]:
    cal, test = realpreds.segmentation_predictions(name)
    probs = np.concatenate([cal.probabilities(), test.probabilities()]).astype(np.float64)
    masks = np.concatenate([cal.masks, test.masks])
    return probs, masks


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["msd_lung", "jsrt", "kvasir"])
def test_conformal_mask_controls_fnr_over_seeded_splits(name):
    probs, masks = _pool(name)
    n_total, k = probs.shape[0], probs.shape[1]
    n_cal = n_total // 2
    rng = np.random.default_rng(12345)
    split_means = np.empty((N_SPLITS, k - 1))
    for r in range(N_SPLITS):  # 200 independent splits; each is vectorised over pixels and images
        order = rng.permutation(n_total)
        cal, test = order[:n_cal], order[n_cal:]
        for j in range(1, k):
            lam = crc_threshold(probs[cal, j], masks[cal] == j, ALPHA)
            split_means[r, j - 1] = fnr(probs[test, j], masks[test] == j, lam).mean()
    mean = split_means.mean(axis=0)
    slack = 4.0 * split_means.std(axis=0, ddof=1) / np.sqrt(N_SPLITS)
    assert np.all(mean <= ALPHA + slack), (name, mean, slack)
    # Not vacuous: CRC's lower bound E[FNR] >= alpha - 2B/(n+1) holds for losses without jumps;
    # here the empirical risk jumps by at most one GT pixel of one image, 1 / (n * min |GT|).
    gt_pixels = np.stack([(masks == j).reshape(n_total, -1).sum(axis=1) for j in range(1, k)], axis=1)
    smallest = np.array([gt_pixels[gt_pixels[:, j] > 0, j].min() for j in range(k - 1)])
    lower = ALPHA - 2.0 / (n_cal + 1) - 1.0 / (n_cal * smallest) - slack
    assert np.all(mean >= lower), (name, mean, lower)


@pytest.mark.realdata
def test_segment_eval_cli_on_real_kvasir_with_cvc_shift(tmp_path):
    _cal, test = realpreds.segmentation_predictions("kvasir")
    shift = realpreds.segmentation_shift_predictions("kvasir_cvc")
    pred_path = save_predictions(tmp_path / "test.npz", test)
    shift_path = save_predictions(tmp_path / "cvc.npz", shift)
    out = tmp_path / "r.json"
    assert main(["segment-eval", "--pred", str(pred_path), "--shift", str(shift_path), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    a, b = image_scores(test), image_scores(shift)
    expected = roc_auc_score(np.r_[np.zeros(a.size), np.ones(b.size)], np.r_[a, b])
    assert result["shift_auroc"] == pytest.approx(expected)
    for reduce, auc in result["shift_auroc_by_reduction"].items():  # every reduction, against scikit-learn
        a, b = image_scores(test, reduce=reduce), image_scores(shift, reduce=reduce)
        assert auc == pytest.approx(roc_auc_score(np.r_[np.zeros(a.size), np.ones(b.size)], np.r_[a, b]))
    assert all(0 <= v <= 1 for v in result["dice"].values())
    assert result["n_images"] == test.n_samples and result["n_shift_images"] == shift.n_samples
    # the saved file must give the same numbers as the in-memory artifact
    direct = evaluate_segmentation(test, shift=shift)
    assert result["ece_boundary"] == pytest.approx(direct.ece_boundary)


@pytest.mark.realdata
def test_real_mc_dropout_uncertainty_is_informative():
    _cal, test = realpreds.segmentation_predictions("jsrt", mc_dropout=4)
    assert isinstance(test, Predictions) and test.has_samples
    maps = uncertainty_maps(test)
    np.testing.assert_allclose(maps["entropy"], maps["expected_entropy"] + maps["mutual_information"], atol=1e-4)
    assert maps["mutual_information"].max() > 0  # dropout samples differ somewhere
    result = evaluate_segmentation(test)
    # UEO of the real uncertainty beats the same map with pixels shuffled (no spatial information)
    from medsure.segmentation.metrics import uncertainty_error_overlap

    error = maps["predicted"] != test.masks
    shuffled = np.random.default_rng(0).permutation(maps["entropy"].ravel()).reshape(error.shape)
    assert result.ueo > uncertainty_error_overlap(shuffled, error)["best"]


@pytest.mark.realdata
def test_conformal_mask_cli_on_real_jsrt(tmp_path):
    cal, test = realpreds.segmentation_predictions("jsrt")
    c = save_predictions(tmp_path / "cal.npz", cal)
    t = save_predictions(tmp_path / "test.npz", test)
    out = tmp_path / "r.json"
    assert main(["conformal-mask", "--cal", str(c), "--test", str(t), "--alpha", "0.1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["lambda"]) == {"right lung", "left lung", "heart"}
    assert all(v == cal.n_samples for v in result["n_cal"].values())
