"""Joint and evidential prediction files, the joint datasets, and the joint CLI road.

Analyses on a joint file must equal the same analyses on the two single-task files split from it.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from medsure.artifact import (
    JointPredictions,
    Predictions,
    load_joint_predictions,
    load_predictions,
    make_predictions,
    save_joint_predictions,
    save_predictions,
)
from medsure.cli import main
from medsure.data.joint import classification_view, is_joint, joint_labels, make_joint
from medsure.errors import MedsureInputError
from medsure.evidential import dirichlet_summary
from medsure.failure.csf import EVIDENTIAL_CSFS, evidential_csfs
from medsure.failure.evaluate import compute_csfs

from conftest import shared_path


def _joint(n: int = 60, seed: int = 0, k: int = 3, size: int = 8) -> JointPredictions:
    """Synthetic evidential joint predictions whose alpha carries signal about labels and masks."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    alpha = 1.0 + rng.gamma(1.0, 1.0, (n, k))
    alpha[np.arange(n), labels] += rng.gamma(2.0, 3.0, n)
    masks = (rng.random((n, size, size)) < 0.3).astype(np.int64)
    seg_alpha = 1.0 + rng.gamma(1.0, 1.0, (n, 2, size, size))
    seg_alpha[:, 1] += 6.0 * masks * rng.random((n, size, size))
    seg_alpha[:, 0] += 6.0 * (1 - masks) * rng.random((n, size, size))
    ids = np.asarray([f"case{i}" for i in range(n)])
    meta = {"site": np.asarray(["a", "b"])[rng.integers(0, 2, n)]}
    cls = make_predictions(
        np.log(alpha).astype(np.float32), labels=labels, ids=ids, class_names=["x", "y", "z"][:k], meta=meta
    )
    seg = make_predictions(
        np.log(seg_alpha).astype(np.float16), masks=masks, ids=ids, class_names=["background", "lesion"], meta=meta
    )
    return JointPredictions(replace(cls, evidential=True), replace(seg, evidential=True))


# ---- the evidential and joint prediction files ------------------------------------------------


def test_evidential_file_round_trip(tmp_path):
    cls, seg = _joint().split()
    for pred in (cls, seg):
        path = save_predictions(tmp_path / f"{pred.task}.npz", pred)
        with np.load(path) as raw:
            assert "alpha" in raw.files and "logits" not in raw.files
            assert int(raw["format_version"]) == 2
        back = load_predictions(path)
        assert back.evidential and back.task == pred.task
        np.testing.assert_allclose(back.alpha, pred.alpha, rtol=1e-3 if pred.task == "segmentation" else 1e-6)
        np.testing.assert_allclose(back.probabilities(), dirichlet_summary(pred.alpha).probs, rtol=2e-3)
    plain = save_predictions(tmp_path / "plain.npz", make_predictions(np.zeros((3, 2), np.float32)))
    with np.load(plain) as raw:
        assert int(raw["format_version"]) == 1  # files without alpha stay readable by older medsure


def test_alpha_at_or_below_zero_is_refused_with_one_line(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, alpha=np.array([[2.0, 0.0], [1.5, 3.0]]), labels=np.array([0, 1]))
    with pytest.raises(MedsureInputError) as info:
        load_predictions(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"prediction file '{path}', key 'alpha': got 1 value(s) <= 0 or not finite")
    assert "expected Dirichlet concentrations alpha > 0" in message
    np.savez(path, alpha=np.ones((2, 2)), logits=np.ones((2, 2)))
    with pytest.raises(MedsureInputError, match="key 'alpha': got both 'alpha' and 'logits'"):
        load_predictions(path)
    joint = _joint(n=4)
    save_joint_predictions(path, joint)
    with np.load(path) as raw:
        arrays = dict(raw)
    arrays["seg_alpha"] = -arrays["seg_alpha"]
    np.savez(path, **arrays)
    with pytest.raises(MedsureInputError, match=r"key 'seg_alpha': got .* <= 0"):
        load_joint_predictions(path)


def test_joint_file_round_trip_and_parts(tmp_path):
    joint = _joint()
    path = save_joint_predictions(tmp_path / "joint.npz", joint)
    back = load_joint_predictions(path)
    for a, b in zip(joint.split(), back.split(), strict=True):
        assert a.task == b.task and b.evidential
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.class_names, b.class_names)
        np.testing.assert_array_equal(a.targets, b.targets)
        np.testing.assert_array_equal(a.meta["site"], b.meta["site"])
        np.testing.assert_allclose(a.alpha, b.alpha, rtol=1e-3)
    assert load_predictions(path).task == "classification"
    assert load_predictions(path, task="segmentation").task == "segmentation"
    with pytest.raises(MedsureInputError, match="expected 'joint'"):
        load_joint_predictions(save_predictions(tmp_path / "single.npz", joint.classification))


def test_joint_parts_must_share_ids():
    cls, seg = _joint(n=5).split()
    with pytest.raises(MedsureInputError, match="key 'ids'"):
        JointPredictions(cls, replace(seg, ids=np.asarray([f"other{i}" for i in range(5)])))
    with pytest.raises(MedsureInputError, match="a segmentation part"):
        JointPredictions(cls, cls)


def test_evidential_csfs_by_hand_and_in_failure_analysis():
    alpha = np.array([[9.0, 1.0], [5.0, 5.0], [1.0, 1.0]])
    csfs = evidential_csfs(alpha)
    assert set(csfs) == set(EVIDENTIAL_CSFS)
    np.testing.assert_allclose(csfs["evidential_u"], -np.array([2 / 10, 2 / 10, 1.0]))
    np.testing.assert_allclose(csfs["evidential_dissonance"], -np.array([0.0, 0.8, 0.0]))
    cls = _joint().classification
    found = compute_csfs(cls)
    assert set(EVIDENTIAL_CSFS) <= set(found)
    assert "evidential_u" not in compute_csfs(replace(cls, evidential=False))  # softmax files: no u


# ---- analyses on a joint file equal the analyses on its split files ---------------------------

_COMMANDS = {
    "calibration": lambda c, t, o: ["calibration", "--cal", c, "--test", t, "--out", o],
    "conformal": lambda c, t, o: ["conformal", "--cal", c, "--test", t, "--method", "aps", "--out", o],
    "failure": lambda c, t, o: ["failure", "--cal", c, "--test", t, "--out", o],
    "segment-eval": lambda c, t, o: ["segment-eval", "--pred", t, "--cal", c, "--out", o],
    "conformal-mask": lambda c, t, o: ["conformal-mask", "--cal", c, "--test", t, "--out", o],
}


def _without_paths(value):
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if not k.endswith("_file") and k != "inputs"}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    if isinstance(value, str) and value.endswith(".npz"):
        return "<file>"
    return value


@pytest.mark.parametrize("command", list(_COMMANDS))
def test_analyses_on_joint_file_equal_the_split_files(command, tmp_path, capsys):
    cal, test = _joint(n=80, seed=1), _joint(n=60, seed=2)
    files = {}
    for name, joint in (("cal", cal), ("test", test)):
        files[f"{name}_joint"] = str(save_joint_predictions(tmp_path / f"{name}_joint.npz", joint))
        part = joint.segmentation if command in ("segment-eval", "conformal-mask") else joint.classification
        files[f"{name}_split"] = str(save_predictions(tmp_path / f"{name}_split.npz", part))
    results = []
    for kind in ("joint", "split"):
        out = tmp_path / f"{kind}.json"
        argv = _COMMANDS[command](files[f"cal_{kind}"], files[f"test_{kind}"], str(out))
        assert main(argv) == 0, capsys.readouterr().err
        results.append(_without_paths(json.loads(out.read_text())))
    assert results[0] == results[1]


# ---- joint datasets -----------------------------------------------------------------------------


def test_make_joint_checks_masks_and_labels():
    images = np.zeros((3, 8, 8, 1), np.uint8)
    masks = np.zeros((3, 8, 8), np.int64)
    ds = make_joint(images, masks, np.array([0, 1, 1]), np.array(["a", "b", "c"]), image_class_names=["n", "p"])
    assert is_joint(ds) and joint_labels(ds)[1] == ["n", "p"]
    view = classification_view(ds)
    assert view.task == "classification" and view.targets.tolist() == [0, 1, 1]
    with pytest.raises(MedsureInputError, match=r"masks: got shape \(3, 8, 7\); expected one mask of each image"):
        make_joint(
            images, masks[:, :, :7], np.array([0, 1, 1]), np.array(["a", "b", "c"]), image_class_names=["n", "p"]
        )
    with pytest.raises(MedsureInputError, match=r"labels: got values in \[0, 2\]; expected class indices in \[0, 1\]"):
        make_joint(images, masks, np.array([0, 2, 1]), np.array(["a", "b", "c"]), image_class_names=["n", "p"])


@pytest.mark.realdata
def test_ph2_joint_loads_labels_and_masks():
    shared_path("ph2")
    from medsure.data import load_dataset

    ds = load_dataset("ph2_joint", image_size=32)
    labels, names = joint_labels(ds)
    assert names == ["common_nevus", "atypical_nevus", "melanoma"]
    assert np.bincount(labels).tolist() == [80, 80, 40]
    assert ds.targets.shape == (200, 32, 32) and set(np.unique(ds.targets)) == {0, 1}
    # every PH2 image shows a lesion: its mask is never empty
    assert (ds.targets.reshape(200, -1).sum(1) > 0).all()


@pytest.mark.realdata
@pytest.mark.slow
def test_busi_joint_masks_and_duplicate_groups_stay_in_one_split():
    root = shared_path("busi_masks").parent  # the shared folders, not the embedded copy
    from medsure.data import load_dataset
    from medsure.training.splits import standard_splits

    ds = load_dataset("busi_joint", root=root, image_size=32)
    labels, names = joint_labels(ds)
    assert names == ["benign", "malignant", "normal"] and len(ds) == 780
    empty = ds.targets.reshape(len(ds), -1).sum(1) == 0
    assert empty[labels == 2].all() and not empty[labels != 2].any()  # normal images: empty masks
    splits = standard_splits(ds, seed=0)
    where = {}
    for name, part in splits.items():
        for group in np.unique(part.meta["dup_group"]):
            assert where.setdefault(int(group), name) == name, f"group {group} in two splits"


@pytest.mark.realdata
@pytest.mark.slow
def test_isic2017_joint_pairs_every_image_with_its_mask():
    shared_path("isic2017", "ISIC-2017_Validation_Part1_GroundTruth_256")
    from medsure.data import load_dataset

    ds = load_dataset("isic2017_joint", image_size=32)
    labels, names = joint_labels(ds)
    assert names == ["non-melanoma", "melanoma"] and len(ds) == 2150
    assert np.bincount(labels).tolist() == [1746, 404]
    assert set(np.unique(ds.meta["source_split"])) == {"train", "val"}
    area = ds.targets.reshape(len(ds), -1).mean(1)
    assert (area > 0).mean() > 0.99  # every ISIC image shows a lesion (a few tiny ones vanish at 32 px)
    # masks are aligned with their images: the lesion is darker than the skin around it on average
    grey = ds.images.mean(-1)
    inside = (grey * ds.targets).sum((1, 2)) / np.maximum(ds.targets.sum((1, 2)), 1)
    outside = (grey * (1 - ds.targets)).sum((1, 2)) / np.maximum((1 - ds.targets).sum((1, 2)), 1)
    assert np.mean(inside < outside) > 0.85


# ---- training, predicting and the CLI --------------------------------------------------------


@pytest.mark.realdata
def test_train_uml_predict_joint_file_end_to_end(tmp_path, capsys):
    shared_path("ph2")
    run, out = tmp_path / "run", tmp_path / "joint.npz"
    argv = ["train", "--dataset", "ph2_joint", "--model", "uml", "--image-size", "16", "--epochs", "1"]
    assert main([*argv, "--batch-size", "32", "--threads", "1", "--out", str(run)]) == 0, capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "joint" and config["seg_class_names"] == ["background", "lesion"]
    assert config["model"]["num_classes"] == 3 and config["model"]["evidence"] == "softplus"
    assert main(["predict", "--run", str(run), "--out", str(out)]) == 0, capsys.readouterr().err
    cls, seg = load_joint_predictions(out).split()
    assert cls.alpha.shape == (35, 3) and seg.alpha.shape == (35, 2, 16, 16)
    assert (cls.alpha >= 1).all() and (seg.alpha >= 1 - 1e-3).all()  # alpha = evidence + 1
    assert cls.labels is not None and seg.masks is not None
    # new, unlabelled images (another size, PNG files): the same model's joint file without labels or masks
    from PIL import Image

    new = tmp_path / "new"
    new.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(new / f"case_{i}.png")
    unlabelled = tmp_path / "new.npz"
    assert main(["predict", "--run", str(run), "--images", str(new), "--out", str(unlabelled)]) == 0, (
        capsys.readouterr().err
    )
    cls_new, seg_new = load_joint_predictions(unlabelled).split()
    assert cls_new.alpha.shape == (3, 3) and seg_new.alpha.shape == (3, 2, 16, 16)
    assert cls_new.labels is None and seg_new.masks is None
    assert sorted(cls_new.ids.tolist()) == sorted(seg_new.ids.tolist())


@pytest.mark.realdata
def test_uml_refuses_a_dataset_without_masks_and_labels(tmp_path, capsys):
    shared_path("ph2")
    argv = ["train", "--dataset", "ph2", "--model", "uml", "--image-size", "16", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dataset ph2 for --model uml" in err[0] and "a joint dataset" in err[0]
    assert not (tmp_path / "run").exists()


def test_evidential_classifier_writes_alpha(tmp_path):
    from medsure.data import load_dataset
    from medsure.predict import predict
    from medsure.training import TrainConfig, train
    from medsure.training.splits import standard_splits

    splits = standard_splits(load_dataset("breastmnist"), seed=0)
    small = {k: v.subset(np.arange(min(len(v), 64))) for k, v in splits.items()}
    config = TrainConfig(
        model="small_cnn", epochs=2, batch_size=32, loss="evidential_mse", patience=0, num_threads=1, bf16=False
    )
    result = train(config, small, tmp_path / "run")
    # the trainer selects best.pt by the number an analysis of the prediction file gives (alpha / S)
    from medsure.training.metrics import auc

    val = predict(result.run, small["val"])
    best = result.history[result.best_epoch - 1]
    assert best["monitor"] == "auc"
    assert best["val_auc"] == pytest.approx(auc(val.logits, small["val"].targets), abs=1e-9)
    assert result.run.config["model"]["evidence"] == "softplus"
    pred = predict(result.run, small["test"])
    assert pred.evidential and (pred.alpha >= 1).all()
    path = save_predictions(tmp_path / "p.npz", pred)
    assert isinstance(load_predictions(path), Predictions) and load_predictions(path).evidential
    assert torch.isfinite(torch.as_tensor(result.history[-1]["train_loss"]))


def test_segment_eval_reads_the_pixel_u_map(tmp_path, capsys):
    cal, test = _joint(n=40, seed=3), _joint(n=30, seed=4)
    paths = [str(save_joint_predictions(tmp_path / f"{n}.npz", j)) for n, j in (("cal", cal), ("test", test))]
    out = tmp_path / "seg.json"
    argv = ["segment-eval", "--pred", paths[1], "--cal", paths[0], "--uncertainty", "evidential_u", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["uncertainty"] == "evidential_u"
    from medsure.segmentation.uncertainty import uncertainty_map

    seg = test.segmentation
    np.testing.assert_allclose(uncertainty_map(seg, "evidential_u"), 2.0 / seg.alpha.sum(axis=1), rtol=1e-3)
    plain = save_predictions(tmp_path / "plain.npz", replace(seg, evidential=False))
    argv = ["segment-eval", "--pred", str(plain), "--uncertainty", "evidential_u", "--out", str(tmp_path / "x.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "which has no alpha" in err[0]
    assert not (tmp_path / "x.json").exists()


def test_evidential_unet_through_the_cli(tmp_path, capsys):
    """``--model unet --loss evidential`` (embedded MSD lung patches): the file holds pixel alpha."""
    run, out = tmp_path / "run", tmp_path / "seg.npz"
    argv = ["train", "--dataset", "msd_lung", "--model", "unet", "--loss", "evidential_log", "--image-size", "16"]
    argv += ["--epochs", "1", "--max-samples", "24", "--threads", "1", "--out", str(run)]
    assert main(argv) == 0, capsys.readouterr().err
    assert main(["predict", "--run", str(run), "--out", str(out)]) == 0, capsys.readouterr().err
    pred = load_predictions(out)
    assert pred.task == "segmentation" and pred.evidential
    assert pred.alpha.shape[1:] == (2, 16, 16) and (pred.alpha >= 1 - 1e-3).all()


def test_cli_refuses_alpha_at_or_below_zero_and_writes_nothing(tmp_path, capsys):
    good = save_joint_predictions(tmp_path / "good.npz", _joint(n=30))
    bad = tmp_path / "bad.npz"
    alpha = np.exp(_joint(n=30).classification.logits.astype(np.float64))
    alpha[3, 1] = -0.5
    np.savez(bad, alpha=alpha, labels=_joint(n=30).classification.labels)
    for command in ("calibration", "failure", "conformal"):
        out = tmp_path / f"{command}.json"
        assert main(_COMMANDS[command](str(good), str(bad), str(out))) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "key 'alpha': got 1 value(s) <= 0" in err[0], err
        assert not out.exists()


def test_joint_command_report_and_agreement_with_conformal(tmp_path, capsys):
    cal, test = _joint(n=80, seed=5), _joint(n=50, seed=6)
    paths = [str(save_joint_predictions(tmp_path / f"{n}.npz", j)) for n, j in (("cal", cal), ("test", test))]
    out, report = tmp_path / "joint.json", tmp_path / "joint.html"
    argv = ["joint", "--cal", paths[0], "--test", paths[1], "--out", str(out), "--report", str(report)]
    assert main([*argv, "--examples", "4"]) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    conformal_out = tmp_path / "conformal.json"
    assert (
        main(["conformal", "--cal", paths[0], "--test", paths[1], "--method", "lac", "--out", str(conformal_out)]) == 0
    )
    conformal = json.loads(conformal_out.read_text())
    assert result["coverage"] == pytest.approx(conformal["coverage"])
    assert result["mean_set_size"] == pytest.approx(conformal["mean_set_size"])
    u = dirichlet_summary(np.exp(test.classification.logits.astype(np.float64))).vacuity
    assert result["mean_class_u"] == pytest.approx(u.mean(), rel=1e-6)
    assert [c["class_u"] for c in result["cases"]][:2] == pytest.approx(np.sort(u)[::-1][:2].tolist(), rel=1e-6)
    page = report.read_text()
    assert "Joint view, one row per test case" in page and result["cases"][0]["id"] not in ("",)
    assert "holds on average over calibration draws" in page
    # a single-task file is refused in one line, nothing written
    single = str(save_predictions(tmp_path / "single.npz", test.classification))
    out2 = tmp_path / "x.json"
    assert main(["joint", "--cal", paths[0], "--test", single, "--out", str(out2)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected 'joint'" in err[0] and not out2.exists()


def test_busi_joint_lists_the_images_without_masks(tmp_path, capsys):
    from PIL import Image

    gen = np.random.default_rng(0)
    for cls in ("benign", "malignant", "normal"):
        (tmp_path / "busi" / cls).mkdir(parents=True)
        (tmp_path / "busi_masks" / cls).mkdir(parents=True)
        for i in range(3):
            name = f"{cls} ({i})"
            Image.fromarray(gen.integers(0, 255, (32, 32), dtype=np.uint8)).save(
                tmp_path / "busi" / cls / f"{name}.png"
            )
            if (cls, i) not in (("malignant", 1), ("normal", 2)):
                mask = np.zeros((32, 32), np.uint8)
                Image.fromarray(mask).save(tmp_path / "busi_masks" / cls / f"{name}_mask.png")
    argv = ["train", "--dataset", "busi_joint", "--root", str(tmp_path), "--model", "uml", "--image-size", "16"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "no mask for 2 image(s): malignant/malignant (1).png, normal/normal (2).png" in err[0]
    assert not (tmp_path / "run").exists()


def test_cal_and_test_must_both_be_evidential_or_not(tmp_path, capsys):
    from medsure.artifact import check_compatible

    cls = _joint(n=40).classification
    plain = replace(cls, evidential=False)
    with pytest.raises(MedsureInputError, match="test outputs: got logits; expected Dirichlet alpha like cal"):
        check_compatible(cls, plain)
    paths = [str(save_predictions(tmp_path / f"{n}.npz", p)) for n, p in (("cal", cls), ("test", plain))]
    out = tmp_path / "c.json"
    assert main(["conformal", "--cal", paths[0], "--test", paths[1], "--method", "lac", "--out", str(out)]) == 2
    assert "expected Dirichlet alpha" in capsys.readouterr().err and not out.exists()
