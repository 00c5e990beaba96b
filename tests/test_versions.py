"""One version everywhere (issue 17): every results JSON a command writes, the prediction files and the
HTML report name the medsure version that wrote them, and it is ``medsure.__version__``
(``medsure --version`` and the installed metadata are checked in tests/test_packaging.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import medsure
from medsure.artifact import make_predictions, save_predictions
from medsure.cli import main
from medsure.utils.io import VERSION_KEY, with_version


def test_with_version_stamps_a_copy_first_and_replaces_an_older_version():
    record = {"alpha": 0.1, VERSION_KEY: "0.0.1"}
    stamped = with_version(record)
    assert list(stamped) == [VERSION_KEY, "alpha"]
    assert stamped[VERSION_KEY] == medsure.__version__ != "0.0.1"
    assert record == {"alpha": 0.1, VERSION_KEY: "0.0.1"}  # the input is not modified


def _segmentation(seed: int, n: int = 12, side: int = 8):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, side, side), np.int64)
    masks[:, 2:6, 2:6] = 1
    logits = rng.normal(scale=0.5, size=(n, 2, side, side)).astype(np.float32)
    logits[:, 1] += np.where(masks == 1, 2.0, -2.0)
    return make_predictions(logits, masks=masks, class_names=["background", "lesion"])


def _classification(seed: int, n: int = 40, k: int = 3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[np.arange(n), labels] += 2.0
    return make_predictions(logits, labels=labels, ids=[f"{seed}-{i}" for i in range(n)])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("versions")
    return {
        "seg_cal": save_predictions(folder / "seg_cal.npz", _segmentation(1)),
        "seg_test": save_predictions(folder / "seg_test.npz", _segmentation(2)),
        "cls_cal": save_predictions(folder / "cls_cal.npz", _classification(3)),
        "cls_test": save_predictions(folder / "cls_test.npz", _classification(4)),
    }


COMMANDS = [
    pytest.param("segment-eval", lambda f: ["--pred", f["seg_test"], "--cal", f["seg_cal"]], id="segment-eval"),
    pytest.param("conformal-mask", lambda f: ["--cal", f["seg_cal"], "--test", f["seg_test"]], id="conformal-mask"),
    pytest.param(
        "calibration",
        lambda f: ["--cal", f["cls_cal"], "--test", f["cls_test"]],
        id="calibration",
    ),
    pytest.param(
        "conformal",
        lambda f: ["--cal", f["cls_cal"], "--test", f["cls_test"], "--method", "lac", "--alpha", "0.2"],
        id="conformal",
    ),
    pytest.param(
        "failure",
        lambda f: ["--cal", f["cls_cal"], "--test", f["cls_test"], "--bootstrap", "10"],
        id="failure",
    ),
]


@pytest.mark.parametrize("command, inputs", COMMANDS)
def test_command_results_record_the_package_version(command, inputs, files, tmp_path):
    out = tmp_path / "result.json"
    assert main([command, *map(str, inputs(files)), "--out", str(out)]) == 0
    assert json.loads(out.read_text())[VERSION_KEY] == medsure.__version__


def test_html_report_footer_names_the_version(files, tmp_path):
    report = tmp_path / "report.html"
    argv = ["segment-eval", "--pred", str(files["seg_test"]), "--out", str(tmp_path / "r.json")]
    assert main([*argv, "--report", str(report)]) == 0
    footer = report.read_text(encoding="utf-8").rsplit("<footer", 1)[-1]
    assert f"medsure {medsure.__version__}</p></footer>" in footer


def test_explain_json_and_predicted_file_record_the_version(tmp_path):
    """A tiny real run (1 epoch, 24 embedded BUSI images at 16 px): ``medsure predict`` and
    ``medsure explain`` name the version in what they write."""
    from medsure.artifact import load_predictions

    run = tmp_path / "run"
    train = ["train", "--dataset", "busi", "--model", "small_cnn", "--image-size", "16", "--epochs", "1"]
    assert main([*train, "--max-samples", "24", "--out", str(run)]) == 0
    assert main(["predict", "--run", str(run), "--out", str(tmp_path / "pred.npz")]) == 0
    pred = load_predictions(tmp_path / "pred.npz")
    assert pred.provenance[VERSION_KEY] == medsure.__version__
    out = tmp_path / "explain"
    assert main(["explain", "--run", str(run), "--ids", str(pred.ids[0]), "--out", str(out)]) == 0
    assert json.loads((out / "explain.json").read_text())[VERSION_KEY] == medsure.__version__
