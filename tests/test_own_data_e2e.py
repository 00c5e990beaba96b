"""End to end, as a new user would: a user-shaped folder of real images (other file names, GIF
masks, a group CSV) -> train (tiny, seconds) -> predict on an unlabelled folder -> segment-eval
and conformal-mask with reports; the same for a classification CSV manifest with conformal and
calibration reports. Relative roots are run from another working directory."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from medsure.artifact import load_predictions
from medsure.cli import main
from test_own_data import _busi_files, make_segfolder
from test_training import single_thread  # noqa: F401 (autouse fixture: one torch thread)

pytestmark = pytest.mark.realdata

TINY = ["--epochs", "1", "--batch-size", "16", "--image-size", "32", "--threads", "1", "--patience", "0"]


def _imgs_have_alt(html: str) -> None:
    tags = re.findall(r"<img [^>]*>", html)
    assert tags, "the report has figures"
    for tag in tags:
        alt = re.search(r'alt="([^"]*)"', tag)
        assert alt and len(alt.group(1)) > 15, f"figure without a descriptive alt text: {tag[:80]}..."


def test_segmentation_folder_end_to_end(tmp_path, monkeypatch, capsys):
    root = make_segfolder(tmp_path, 30)
    new = tmp_path / "new images" / "ward 3"
    new.mkdir(parents=True)
    for f in sorted((root / "scans").iterdir())[:5]:
        shutil.copy(f, new / f"unseen_{f.name}")
    monkeypatch.chdir(tmp_path)  # relative --root, stored resolved
    argv = ["train", "--dataset", "segfolder", "--root", "my study", "--option", "images=scans"]
    argv += ["--option", "masks=labels", "--option", "mask_suffix=_seg", "--option", "groups=groups.csv"]
    argv += ["--option", "class_names=background,lesion", "--model", "unet", *TINY, "--out", "run"]
    assert main(argv) == 0
    assert "group-disjoint: 20 groups" in capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["dataset"]["root"] == str(root.resolve())
    assert config["data_provenance"]["groups_across_splits"]["group_disjoint"] is True

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run, out = str(tmp_path / "run"), tmp_path / "out"
    for split in ("cal", "test"):
        assert main(["predict", "--run", run, "--split", split, "--out", str(out / f"{split}.npz")]) == 0
    assert main(["predict", "--run", run, "--images", str(tmp_path / "new images"), "--out", str(out / "new.npz")]) == 0
    new_pred = load_predictions(out / "new.npz")
    assert new_pred.masks is None and new_pred.logits.shape == (5, 2, 32, 32)
    assert new_pred.ids.tolist()[0] == "ward 3/unseen_case000_scan.png"
    assert new_pred.class_names.tolist() == ["background", "lesion"]

    seg = ["segment-eval", "--pred", str(out / "test.npz"), "--out", str(out / "seg.json")]
    assert main([*seg, "--report", str(out / "seg.html")]) == 0
    cm = ["conformal-mask", "--cal", str(out / "cal.npz"), "--test", str(out / "test.npz"), "--alpha", "0.2"]
    assert main([*cm, "--out", str(out / "cm.json"), "--report", str(out / "cm.html")]) == 0
    page = (out / "cm.html").read_text()
    _imgs_have_alt(page)
    _imgs_have_alt((out / "seg.html").read_text())
    fnr = json.loads((out / "cm.json").read_text())["fnr"]
    guarantee = re.search(r"<p class='guarantee'>(.*?)</p>", page).group(1)
    assert f"{fnr:.4f}" in guarantee and "on average over calibration draws" in guarantee
    assert "outlined in yellow" in page
    capsys.readouterr()
    # an unlabelled file given to an analysis that needs masks: one line naming what needs them
    assert main(["segment-eval", "--pred", str(out / "new.npz"), "--out", str(out / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "without 'masks' (unlabelled predictions)" in err and "Dice" in err
    assert not (out / "x.json").exists()
    # --images: a missing folder, and options that pick a dataset, are one-line errors writing nothing
    bad = ["predict", "--run", run, "--out", str(out / "bad.npz"), "--images"]
    assert main([*bad, str(tmp_path / "no such folder")]) == 2
    assert main([*bad, str(tmp_path / "new images"), "--dataset", "kvasir"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such folder" in err[0] and "no --dataset with --images" in err[1]
    assert not (out / "bad.npz").exists()


def test_classification_manifest_end_to_end(tmp_path, monkeypatch, capsys):
    hospital = tmp_path / "hospital"
    (hospital / "images").mkdir(parents=True)
    rows = ["image,label,group"]
    for i, f in enumerate(_busi_files(20, ("benign", "malignant", "normal"))):
        shutil.copy(f, hospital / "images" / f"scan_{i:03d}.png")
        rows.append(f"images/scan_{i:03d}.png,{f.parent.name},patient_{i // 2}")
    (hospital / "cases.csv").write_text("\n".join(rows) + "\n")
    unlabelled = hospital / "new.csv"
    unlabelled.write_text("image\n" + "".join(f"images/scan_{i:03d}.png\n" for i in range(0, 60, 7)))
    monkeypatch.chdir(hospital)
    train = ["train", "--dataset", "manifest", "--root", "cases.csv", "--model", "small_cnn", *TINY, "--out", "run"]
    assert main(train) == 0
    out = hospital / "out"
    for split in ("cal", "test"):
        assert main(["predict", "--run", "run", "--split", split, "--out", str(out / f"{split}.npz")]) == 0
    assert main(["predict", "--run", "run", "--images", "new.csv", "--out", str(out / "new.npz")]) == 0
    new_pred = load_predictions(out / "new.npz")
    assert new_pred.labels is None and len(new_pred.ids) == 9

    cal, test = str(out / "cal.npz"), str(out / "test.npz")
    common = ["--cal", cal, "--alpha", "0.2", "--method", "aps"]
    assert main(["conformal", *common, "--test", test, "--out", str(out / "c.json"),
                 "--report", str(out / "c.html")]) == 0  # fmt: skip
    page = (out / "c.html").read_text()
    _imgs_have_alt(page)
    coverage = json.loads((out / "c.json").read_text())["coverage"]
    guarantee = re.search(r"<p class='guarantee'>(.*?)</p>", page).group(1)
    assert f"{coverage:.4f}" in guarantee and "on average over calibration draws" in guarantee
    assert main(["conformal", *common, "--class-conditional", "--fallback", "include", "--test", test,
                 "--out", str(out / "cc.json"), "--report", str(out / "cc.html")]) == 0  # fmt: skip
    strata = (out / "cc.html").read_text().split("Coverage per stratum")[1]
    assert all(f"<td>{name}</td>" in strata for name in ("benign", "malignant", "normal"))
    assert "class_0" not in strata
    capsys.readouterr()
    # unlabelled test file: sets are written, one line says what needs labels
    assert main(["conformal", *common, "--test", str(out / "new.npz"), "--out", str(out / "n.json"),
                 "--report", str(out / "n.html")]) == 0  # fmt: skip
    said = capsys.readouterr().out.strip()
    assert len(said.splitlines()) == 1 and "coverage and validity need test labels" in said
    assert "coverage, validity and per-class coverage need labels" in (out / "n.html").read_text()
    assert main(["calibration", "--cal", cal, "--test", test, "--out", str(out / "k.json"),
                 "--report", str(out / "k.html")]) == 0  # fmt: skip
    _imgs_have_alt((out / "k.html").read_text())
    failure = ["failure", "--cal", cal, "--test", test, "--bootstrap", "20", "--out", str(out / "f.json")]
    assert main([*failure, "--report", str(out / "f.html")]) == 0
    _imgs_have_alt((out / "f.html").read_text())

    # predict --root without --dataset: the run's dataset, read from where it is now
    moved = tmp_path / "moved"
    shutil.move(str(hospital / "images"), str(moved / "images") if moved.mkdir() is None else "")
    shutil.copy(hospital / "cases.csv", moved / "cases.csv")
    again = ["predict", "--run", "run", "--split", "test", "--out", str(out / "again.npz")]
    assert main(again) == 2  # the recorded root lost its images
    assert main([*again, "--root", str(moved / "cases.csv")]) == 0
    assert np.array_equal(load_predictions(out / "again.npz").ids, load_predictions(out / "test.npz").ids)
