"""``medsure certify`` and ``medsure train-denoiser``: outputs, seeding, bad input (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medsure.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A segmentation run (embedded MSD lung, 48 px) and a classification run (embedded BreastMNIST, 28 px),
    one short epoch each, and denoisers trained at 48 px (fits) and 16 px (does not)."""
    base = tmp_path_factory.mktemp("certify_runs")
    out = {"seg": base / "seg", "cls": base / "cls", "den48": base / "den48", "den16": base / "den16"}
    common = ["--epochs", "1", "--max-samples", "12", "--threads", "1", "--batch-size", "8"]
    assert main(["train", "--dataset", "msd_lung", "--model", "unet", *common, "--out", str(out["seg"])]) == 0
    assert main(["train", "--dataset", "breastmnist", "--model", "small_cnn", *common, "--out", str(out["cls"])]) == 0
    den = ["train-denoiser", "--dataset", "msd_lung", "--max-samples", "6", "--epochs", "1", "--channels", "8", "8"]
    assert main([*den, "--image-size", "48", "--out", str(out["den48"])]) == 0
    assert main([*den, "--image-size", "16", "--out", str(out["den16"])]) == 0
    return out


def _certify(run: Path, tmp: Path, *extra: str, name: str = "cert") -> list[str]:
    return [
        "certify", "--run", str(run), "--limit", "2", "--n0", "4", "--n", "20", "--alpha", "0.01",
        "--out", str(tmp / f"{name}.json"), *extra,
    ]  # fmt: skip


def test_segmentation_outputs_and_seeding(runs: dict[str, Path], tmp_path: Path) -> None:
    for name in ("a", "b"):
        args = _certify(runs["seg"], tmp_path, "--masks", str(tmp_path / f"{name}.npz"), name=name)
        assert main([*args, "--report", str(tmp_path / f"{name}.html")]) == 0
    cert = json.loads((tmp_path / "a.json").read_text())
    for key in ("sigma", "n0", "n", "alpha", "tau", "radius", "correction", "certified_dice", "abstain_rate",
                "per_image", "samples_used", "medsure_version"):  # fmt: skip
        assert key in cert, key
    assert cert["n"] == 20 and cert["correction"] == "holm" and len(cert["per_image"]) == 2
    assert abs(cert["radius"] - 0.25 * 0.6744897501960817) < 1e-12
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert set(a.files) >= {"certified", "counts", "selected", "ids", "n"}
    assert a["certified"].shape == (2, 48, 48) and a["certified"].min() >= -1 and int(a["n"]) == 20
    for key in ("certified", "counts", "selected"):
        np.testing.assert_array_equal(a[key], b[key])  # the same command twice: identical certificates
    assert "Certified robustness" in (tmp_path / "a.html").read_text()


def test_sequential_and_denoiser(runs: dict[str, Path], tmp_path: Path) -> None:
    args = _certify(runs["seg"], tmp_path, "--sequential", "--round-size", "5", "--denoiser", str(runs["den48"]))
    assert main(args) == 0
    cert = json.loads((tmp_path / "cert.json").read_text())
    assert cert["sequential"] is True and cert["denoiser"] == str(runs["den48"])
    assert cert["samples_used"]["mean"] <= 24


def test_classification_outputs(runs: dict[str, Path], tmp_path: Path) -> None:
    assert main(_certify(runs["cls"], tmp_path, "--report", str(tmp_path / "r.html"))) == 0
    cert = json.loads((tmp_path / "cert.json").read_text())
    assert cert["tau"] is None and cert["certified_accuracy"]["curve"][0]["radius"] == 0.0
    assert {"prediction", "p_lower", "radius", "label"} <= set(cert["per_image"][0])


@pytest.mark.parametrize(
    "extra, option",
    [
        (["--sigma", "0"], "--sigma"),
        (["--sigma", "-0.5"], "--sigma"),
        (["--n0", "0"], "--n0"),
        (["--n", "0"], "--n"),
        (["--tau", "0.5"], "--tau"),
        (["--tau", "1.2"], "--tau"),
        (["--alpha", "0"], "--alpha"),
        (["--alpha", "1"], "--alpha"),
        (["--limit", "0"], "--limit"),
    ],
)
def test_bad_settings(runs: dict[str, Path], tmp_path: Path, capsys, extra: list[str], option: str) -> None:
    args = _certify(runs["seg"], tmp_path, "--masks", str(tmp_path / "m.npz"), *extra)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "expected" in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "extra, option",
    [
        (["--sequential"], "--sequential"),
        (["--tau", "0.8"], "--tau"),
        (["--correction", "bh"], "--correction"),
        (["--masks", "m.npz"], "--masks"),
    ],
)
def test_classification_run_with_segmentation_options(
    runs: dict[str, Path], tmp_path: Path, capsys, extra: list[str], option: str
) -> None:
    assert main(_certify(runs["cls"], tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "segmentation" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_denoiser_of_another_size_is_refused(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(_certify(runs["seg"], tmp_path, "--denoiser", str(runs["den16"]))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--denoiser" in err[0] and "16x16" in err[0] and "48x48" in err[0]
    assert main(_certify(runs["seg"], tmp_path, "--denoiser", str(runs["seg"]))) == 2  # a model run, not a denoiser
    assert "denoiser run" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_train_denoiser_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["train-denoiser", "--dataset", "msd_lung", "--epochs", "0", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--epochs" in err[0]
    assert not (tmp_path / "d").exists()
