"""The cached real-data artifacts of tests/realpreds.py: held-out, disjoint, better than chance."""

from __future__ import annotations

import numpy as np
import pytest

from medsure.artifact import check_compatible
from medsure.training.metrics import auc, mean_dice

import realpreds

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize("name, min_auc", [("pneumoniamnist", 0.9), ("busi", 0.75), ("isic2017", 0.6)])
def test_classification_artifacts_are_held_out_and_informative(name: str, min_auc: float) -> None:
    cal, test = realpreds.classification_predictions(name)
    check_compatible(cal, test)
    splits = realpreds.split_datasets(name)
    seen = set(splits["train"].ids) | set(splits["val"].ids)
    assert not set(cal.ids) & set(test.ids)
    assert not (set(cal.ids) | set(test.ids)) & seen
    assert auc(test.logits, test.labels) > min_auc
    assert cal.thumbnails is not None and cal.provenance["run"]["config"]["task"] == "classification"


def test_isic_test_is_the_official_validation_set() -> None:
    _, test = realpreds.classification_predictions("isic2017")
    assert set(test.meta["source_split"]) == {"val"} and test.n_samples == 150


@pytest.mark.parametrize("name, min_dice", [("msd_lung", 0.3), ("jsrt", 0.8), ("kvasir", 0.3)])
def test_segmentation_artifacts(name: str, min_dice: float) -> None:
    cal, test = realpreds.segmentation_predictions(name)
    check_compatible(cal, test)
    assert not set(cal.ids) & set(test.ids)
    assert test.logits.dtype == np.float16
    dice = mean_dice(test.logits.astype(np.float32).argmax(1), test.masks, test.n_classes)
    assert dice > min_dice


def test_mc_dropout_artifacts_have_a_sample_axis() -> None:
    cal, _ = realpreds.classification_predictions("pneumoniamnist", mc_dropout=4)
    plain, _ = realpreds.classification_predictions("pneumoniamnist")
    assert cal.logits.shape == (4, *plain.logits.shape) and cal.sample_kind == "mc_dropout"
    assert not np.allclose(cal.logits[0], cal.logits[1])
    seg_cal, _ = realpreds.segmentation_predictions("msd_lung", mc_dropout=3)
    assert seg_cal.logits.shape[0] == 3 and seg_cal.logits.ndim == 5


def test_shift_artifacts_come_from_the_source_model() -> None:
    cal, _ = realpreds.classification_predictions("isic2017")
    ph2 = realpreds.classification_shift_predictions("isic2017_ph2")
    check_compatible(cal, ph2)
    assert ph2.n_samples == 200 and ph2.provenance["run"]["config"]["train"]["dataset"]["name"] == "isic2017"
    kv, _ = realpreds.segmentation_predictions("kvasir")
    cvc = realpreds.segmentation_shift_predictions("kvasir_cvc")
    check_compatible(kv, cvc)
    assert cvc.n_samples == 609 and cvc.logits.shape[-2:] == kv.logits.shape[-2:]
