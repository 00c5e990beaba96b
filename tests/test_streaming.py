"""Streaming analyses over shards equal the in-memory path on real prediction files.

Sets, thresholds, λ and every per-case value must be identical; sums merged shard by shard
(pixel ECE) agree to float tolerance.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from medsure.artifact import Predictions, make_predictions
from medsure.calibration.metrics import calibration_summary
from medsure.calibration.streaming import calibration_summary_streaming
from medsure.conformal import SplitConformalClassifier
from medsure.conformal.streaming import fit_streaming, predict_streaming, score_streaming
from medsure.errors import MedsureInputError
from medsure.failure.evaluate import compute_csfs, prediction_errors
from medsure.failure.metrics import failure_metrics
from medsure.failure.streaming import failure_metrics_streaming
from medsure.segmentation.conformal_mask import ConformalMask
from medsure.segmentation.evaluate import evaluate_segmentation
from medsure.segmentation.streaming import fit_mask_streaming, fnr_streaming, segmentation_metrics_streaming
from medsure.shards import ShardWriter, shard_ranges

from realpreds import classification_predictions, segmentation_predictions


def parts(pred: Predictions, size: int):
    """A stream source: ``pred`` cut into consecutive parts of ``size`` cases (the last shorter)."""
    return lambda: (pred.subset(np.arange(a, b)) for a, b in shard_ranges(pred.n_samples, size))


def to_folder(pred: Predictions, folder: Path, size: int) -> Path:
    ranges = shard_ranges(pred.n_samples, size)
    writer = ShardWriter(folder, task=pred.task, class_names=pred.class_names, n_shards=len(ranges))
    for i, (a, b) in enumerate(ranges):
        writer.write(i, pred.subset(np.arange(a, b)))
    writer.finish()
    return folder


# ---- conformal ----------------------------------------------------------------------------------

CASES = [
    ("lac", {}, "marginal"),
    ("aps", {}, "marginal"),
    ("aps", {}, "class"),
    ("raps", {"lam": 0.05, "k_reg": 1}, "marginal"),
    ("topk", {}, "marginal"),
    ("saps", {"weight": 0.2}, "class"),
]


@pytest.mark.parametrize(("method", "params", "conditional"), CASES)
@pytest.mark.parametrize("name", ["busi", "pneumoniamnist"])
def test_conformal_streaming_equals_in_memory(method: str, params: dict, conditional: str, name: str) -> None:
    cal, test = classification_predictions(name)

    def make() -> SplitConformalClassifier:
        return SplitConformalClassifier(
            method, alpha=0.1, conditional=conditional, params=params or None, fallback="marginal", seed=3
        )

    memory = make().fit(cal)
    stream = fit_streaming(make(), parts(cal, 37))
    np.testing.assert_array_equal(stream.thresholds_, memory.thresholds_)
    np.testing.assert_array_equal(stream.cal_scores_, memory.cal_scores_)
    assert stream.describe() == memory.describe()
    sets = np.concatenate([s for _, s in predict_streaming(stream, parts(test, 41))])
    np.testing.assert_array_equal(sets, memory.predict(test))
    assert score_streaming(stream, parts(test, 41)) == memory.score(test)


@pytest.mark.parametrize("conditional", ["marginal", "class"])
def test_conformal_streaming_row_blocks_change_nothing(monkeypatch: pytest.MonkeyPatch, conditional: str) -> None:
    import medsure.conformal.streaming as streaming

    monkeypatch.setattr(streaming, "_BLOCK_ROWS", 16)  # shards of 50 scored 16 rows at a time
    cal, test = classification_predictions("busi")
    memory = SplitConformalClassifier("aps", alpha=0.1, conditional=conditional, fallback="marginal").fit(cal)
    stream = fit_streaming(
        SplitConformalClassifier("aps", alpha=0.1, conditional=conditional, fallback="marginal"), parts(cal, 50)
    )
    np.testing.assert_array_equal(stream.cal_scores_, memory.cal_scores_)
    shards = list(predict_streaming(stream, parts(test, 50)))
    assert [len(ids) for ids, _ in shards] == [50, 50, test.n_samples - 100]  # one item per shard
    np.testing.assert_array_equal(np.concatenate([s for _, s in shards]), memory.predict(test))
    np.testing.assert_array_equal(np.concatenate([i for i, _ in shards]), test.ids)
    assert score_streaming(stream, parts(test, 50)) == memory.score(test)


def test_conformal_streaming_group_and_mc_dropout(tmp_path: Path) -> None:
    cal, test = classification_predictions("isic2017")
    for conditional, extra in (("group", {"group_key": "sex", "fallback": "include"}), ("marginal", {})):
        memory = SplitConformalClassifier("aps", alpha=0.2, conditional=conditional, **extra).fit(cal)
        stream = fit_streaming(
            SplitConformalClassifier("aps", alpha=0.2, conditional=conditional, **extra),
            to_folder(cal, tmp_path / f"cal-{conditional}", 64),
        )
        np.testing.assert_array_equal(stream.thresholds_, memory.thresholds_)
        assert score_streaming(stream, to_folder(test, tmp_path / f"test-{conditional}", 64)) == memory.score(test)
    cal, test = classification_predictions("pneumoniamnist", mc_dropout=4)  # (T, N, K): mean softmax per case
    memory = SplitConformalClassifier("lac", alpha=0.1).fit(cal)
    stream = fit_streaming(SplitConformalClassifier("lac", alpha=0.1), parts(cal, 50))
    np.testing.assert_array_equal(stream.thresholds_, memory.thresholds_)
    assert score_streaming(stream, parts(test, 50)) == memory.score(test)


def test_conformal_streaming_refuses_tuning() -> None:
    cal, _ = classification_predictions("busi")
    with pytest.raises(MedsureInputError, match=r"raps without k_reg, lam.*explicit score parameters"):
        fit_streaming(SplitConformalClassifier("raps"), parts(cal, 50))


def test_conformal_streaming_memory_grows_by_1d_values_only() -> None:
    # Shards of 10,000 x 50 logits (2 MB each). Reading 6 shards instead of 1 may add only the
    # 1-D per-case values the quantile and the metrics need (scores, labels, hit, size: ~33 B per
    # case), never the shards' logits or probabilities.
    size, k = 10_000, 50

    def shard(i: int) -> Predictions:
        rng = np.random.default_rng([5, i])
        logits = rng.normal(size=(size, k)).astype(np.float32) * 2
        labels = np.where(rng.random(size) < 0.7, logits.argmax(1), rng.integers(0, k, size))
        return make_predictions(logits, labels=labels, ids=[f"{i}-{j}" for j in range(size)])

    peaks = {}
    for n_shards in (1, 6):
        source = lambda n=n_shards: (shard(i) for i in range(n))  # noqa: E731
        tracemalloc.start()
        clf = fit_streaming(SplitConformalClassifier("aps", alpha=0.1), source)
        score_streaming(clf, source)
        peaks[n_shards] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    growth_per_shard = (peaks[6] - peaks[1]) / 5
    assert growth_per_shard < 48 * size  # the 1-D values
    assert growth_per_shard < size * k * 4 / 4  # far less than one shard's logits


# ---- calibration, failure ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["busi", "isic2017"])
def test_calibration_streaming_equals_in_memory(name: str) -> None:
    _, test = classification_predictions(name)
    expected = calibration_summary(test.probabilities(), test.labels)
    # max_bytes small enough for one class per pass: K + 1 reads of the set
    got = calibration_summary_streaming(parts(test, 29), max_bytes=8 * test.n_samples)
    assert got["passes"] == 1 + test.n_classes and got["n"] == test.n_samples
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    # all classes in one pass
    assert calibration_summary_streaming(parts(test, 29))["passes"] == 2


def test_failure_streaming_equals_in_memory() -> None:
    _, test = classification_predictions("pneumoniamnist", mc_dropout=4)
    got = failure_metrics_streaming(parts(test, 53), n_boot=30, seed=1)
    csfs, errors = compute_csfs(test), prediction_errors(test)
    assert sorted(got) == sorted(csfs) and "mc_dropout_mutual_information" in got
    for name, values in csfs.items():
        assert got[name] == failure_metrics(values, errors, n_boot=30, seed=1), name


# ---- segmentation -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "mc"), [("jsrt", 0), ("msd_lung", 3)])
def test_segmentation_metrics_streaming_equal_in_memory(name: str, mc: int) -> None:
    _, test = segmentation_predictions(name, mc_dropout=mc)
    got = segmentation_metrics_streaming(parts(test, 9))
    expected = evaluate_segmentation(test)
    assert got["n_images"] == expected.n_images
    assert got["dice"] == expected.dice and got["dice_mean"] == expected.dice_mean
    assert got["hd95"] == expected.hd95 and got["hd95_n_undefined"] == expected.hd95_n_undefined
    np.testing.assert_array_equal(got["image_dice"], expected.image_dice)
    np.testing.assert_array_equal(got["image_scores"][expected.image_reduce], expected.image_scores)
    assert got["dice_pred_corr"] == expected.dice_pred_corr
    assert got["dice_spearman_by_reduction"] == expected.dice_spearman_by_reduction
    assert got["ece"] == pytest.approx(expected.ece, rel=1e-9)
    assert got["mce"] == pytest.approx(expected.mce, rel=1e-9)


@pytest.mark.parametrize("empty_gt", ["zero", "exclude"])
@pytest.mark.parametrize("name", ["jsrt", "msd_lung"])
def test_conformal_mask_streaming_equals_in_memory(tmp_path: Path, name: str, empty_gt: str) -> None:
    cal, test = segmentation_predictions(name)
    memory = ConformalMask(0.1, empty_gt=empty_gt).fit(cal)  # type: ignore[arg-type]
    stream = fit_mask_streaming(ConformalMask(0.1, empty_gt=empty_gt), to_folder(cal, tmp_path / "cal", 10))  # type: ignore[arg-type]
    np.testing.assert_array_equal(stream.lambda_, memory.lambda_)
    np.testing.assert_array_equal(stream.n_cal_, memory.n_cal_)
    np.testing.assert_array_equal(stream.class_names_, memory.class_names_)
    np.testing.assert_array_equal(fnr_streaming(stream, parts(test, 7)), memory.fnr(test))
