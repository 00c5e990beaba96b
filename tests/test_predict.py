"""predict / predict_ensemble / TTA: shapes, sample kinds, seeding, inversion of TTA views."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medsure.artifact import load_predictions, save_predictions
from medsure.errors import MedsureInputError
from medsure.models import build_model
from medsure.predict import predict, predict_ensemble
from medsure.training import TrainConfig, load_run, train
from medsure.tta import apply_view, invert_view
from test_training import single_thread, splits, synthetic  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cls") / "run"
    train(TrainConfig(epochs=2, batch_size=8, dropout=0.3), splits(), out)
    return out


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "run"
    train(TrainConfig(model="unet", epochs=1, batch_size=8, dropout=0.3), splits(seg=True), out)
    return out


def test_plain_classification_predictions(cls_run: Path, tmp_path: Path) -> None:
    data = synthetic(11, seed=5)
    pred = predict(load_run(cls_run), data, batch_size=4)
    assert pred.logits.shape == (11, 2) and pred.logits.dtype == np.float32
    assert pred.sample_kind is None
    np.testing.assert_array_equal(pred.labels, data.targets)
    np.testing.assert_array_equal(pred.ids, data.ids)
    np.testing.assert_array_equal(pred.meta["site"], data.meta["site"])
    assert pred.thumbnails.dtype == np.uint8 and pred.thumbnails.shape == (11, 16, 16)
    assert pred.provenance["dataset"] == data.provenance
    assert pred.provenance["run"]["config"]["model"]["name"] == "small_cnn"
    # batch size does not change the outputs
    np.testing.assert_allclose(
        predict(load_run(cls_run), data, batch_size=11).logits, pred.logits, rtol=1e-5, atol=1e-5
    )
    again = load_predictions(save_predictions(tmp_path / "p.npz", pred))
    np.testing.assert_array_equal(again.logits, pred.logits)


def test_mc_dropout_samples_differ_are_seeded_and_restore_state(cls_run: Path) -> None:
    model = load_run(cls_run).model
    data = synthetic(9, seed=5)
    rng_before = torch.get_rng_state()
    a = predict(model, data, mc_samples=4, seed=1)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert not model.training and not any(m.training for m in model.modules())
    b = predict(model, data, mc_samples=4, seed=1)
    c = predict(model, data, mc_samples=4, seed=2)
    assert a.logits.shape == (4, 9, 2) and a.sample_kind == "mc_dropout"
    np.testing.assert_array_equal(a.logits, b.logits)
    assert not np.array_equal(a.logits, c.logits)
    assert not np.allclose(a.logits[0], a.logits[1])


def test_mc_dropout_needs_dropout_layers() -> None:
    model = build_model("small_cnn", in_channels=1, num_classes=2, image_size=16)
    with pytest.raises(MedsureInputError, match="dropout"):
        predict(model, synthetic(4), mc_samples=3)


def test_segmentation_predictions_mc_tta_and_ensemble(seg_run: Path) -> None:
    model = load_run(seg_run).model
    data = synthetic(6, seg=True, seed=7)
    plain = predict(model, data)
    assert plain.logits.shape == (6, 2, 16, 16) and plain.logits.dtype == np.float16
    np.testing.assert_array_equal(plain.masks, data.targets)
    mc = predict(model, data, mc_samples=3)
    assert mc.logits.shape == (3, 6, 2, 16, 16) and mc.sample_kind == "mc_dropout"
    tta = predict(model, data, tta=True)
    assert tta.logits.shape == (5, 6, 2, 16, 16) and tta.sample_kind == "tta"
    np.testing.assert_allclose(tta.logits[0], plain.logits, atol=1e-2)  # view 0 is identity
    ens = predict_ensemble([model, model], data)
    assert ens.logits.shape == (2, 6, 2, 16, 16) and ens.sample_kind == "ensemble"
    assert len(ens.provenance["runs"]) == 2


def test_classification_tta_and_ensemble_shapes(cls_run: Path) -> None:
    model = load_run(cls_run).model
    other = build_model("small_cnn", in_channels=1, num_classes=2, image_size=16)
    data = synthetic(5, seed=3)
    tta = predict(model, data, tta=["identity", "hflip"])
    assert tta.logits.shape == (2, 5, 2) and tta.sample_kind == "tta"
    ens = predict_ensemble([model, other], data)
    assert ens.logits.shape == (2, 5, 2)
    np.testing.assert_allclose(ens.logits[0], predict(model, data).logits, rtol=1e-6, atol=1e-6)


class _Pointwise(nn.Module):
    """Per-pixel logits (x, -x): commutes with every flip and rotation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :1], -x[:, :1]], dim=1) * 4


class _Shifted(nn.Module):
    """Not equivariant: output depends on the pixel to the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.roll(x[:, :1], shifts=1, dims=-1)
        return torch.cat([y, -y], dim=1)


def _smooth_seg(n: int = 3, size: int = 32) -> object:
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(3 * xx + k) * np.cos(2 * yy) for k in range(n)])
    images = ((base * 0.4 + 0.5) * 255).astype(np.uint8)[..., None]
    from medsure.data.base import ImageDataset

    return ImageDataset(
        images=images,
        targets=(images[..., 0] > 127).astype(np.int64),
        ids=np.array([f"i{k}" for k in range(n)]),
        class_names=np.array(["bg", "fg"]),
        task="segmentation",
    )


def test_tta_views_are_inverted_for_segmentation() -> None:
    data = _smooth_seg()
    pred = predict(_Pointwise(), data, tta=True)
    views = pred.logits.astype(np.float32)
    for v in (1, 2):  # flips: exact
        np.testing.assert_array_equal(views[v], views[0])
    centre = slice(8, 24)  # rotations: bilinear there and back, exact up to smoothing inside
    for v in (3, 4):
        np.testing.assert_allclose(views[v][..., centre, centre], views[0][..., centre, centre], atol=0.1)
    shifted = predict(_Shifted(), data, tta=["identity", "hflip"]).logits.astype(np.float32)
    assert not np.allclose(shifted[0], shifted[1])  # the views really were applied


def test_view_inverse_roundtrip() -> None:
    x = torch.rand(2, 3, 8, 8)
    for name in ("identity", "hflip", "vflip", "hvflip"):
        assert torch.equal(invert_view(name, apply_view(name, x)), x)
    with pytest.raises(MedsureInputError):
        apply_view("shear", x)


def test_predict_refuses_mismatched_data(cls_run: Path) -> None:
    run = load_run(cls_run)
    with pytest.raises(MedsureInputError, match="image_size=16"):
        predict(run, synthetic(4, size=32))
    with pytest.raises(MedsureInputError, match="segmentation"):
        predict(run, synthetic(4, seg=True))
    with pytest.raises(MedsureInputError, match="class names"):
        predict(run, replace(synthetic(4), class_names=np.array(["c1", "c0"])))
    with pytest.raises(MedsureInputError, match=r"(?i)choose one"):
        predict(run, synthetic(4), mc_samples=2, tta=True)


def test_the_run_record_travels_with_the_model_not_on_it(cls_run: Path) -> None:
    # the record reaches predict as an argument; nothing is hidden on the module
    run = load_run(cls_run)
    assert not hasattr(run.model, "medsure_run")
    with_record = predict(run, synthetic(4, seed=5))
    bare = predict(run.model, synthetic(4, seed=5))
    np.testing.assert_array_equal(with_record.logits, bare.logits)
    assert with_record.provenance["run"]["run_dir"] == str(cls_run)
    assert "data_provenance" not in with_record.provenance["run"]["config"]
    assert bare.provenance["run"] == {"model_class": type(run.model).__name__}
    # a bare module is not checked against a record it does not have
    assert predict(run.model, synthetic(4, size=32)).logits.shape == (4, 2)
    ens = predict_ensemble([run, run.model], synthetic(4, seed=5))
    assert ens.provenance["runs"][0]["run_dir"] == str(cls_run)
    assert ens.provenance["runs"][1] == {"model_class": type(run.model).__name__}


@pytest.mark.parametrize(
    "task,hflip,vflip,expected",
    [
        ("classification", True, False, ("identity", "hflip")),
        ("classification", True, True, ("identity", "hflip", "vflip", "hvflip")),
        ("classification", False, False, ("identity",)),
        ("segmentation", False, False, ("identity", "rot+10", "rot-10")),
        ("segmentation", True, True, ("identity", "hflip", "vflip", "rot+10", "rot-10")),
    ],
)
def test_tta_views_follow_the_training_augmentation(task, hflip, vflip, expected):
    from medsure.tta import check_views, views_for_training

    views = views_for_training(task, hflip=hflip, vflip=vflip)
    assert views == expected and check_views(views) == views
