"""CLI smoke test: `medsure train` then `medsure predict` (single, MC, TTA, ensemble) on a tiny subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsure.artifact import load_predictions
from medsure.cli import main
from test_training import single_thread  # noqa: F401 (autouse fixture: one torch thread)


def test_train_predict_cli_on_tiny_subset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = [
        "train",
        "--dataset",
        "pneumoniamnist",
        "--model",
        "small_cnn",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--max-samples",
        "48",
        "--batch-size",
        "16",
        "--dropout",
        "0.2",
    ]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--seed", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(base + ["--out", str(tmp_path / "a")]) == 2  # existing run without --resume
    assert "already holds a run" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "a"), "--resume"]) == 0  # finished: no-op

    out = tmp_path / "test.npz"
    assert main(["predict", "--run", str(tmp_path / "a"), "--split", "test", "--out", str(out)]) == 0
    pred = load_predictions(out)
    assert pred.logits.shape == (48, 2) and pred.labels.shape == (48,)
    assert pred.provenance["split"] == "test"
    cal_out = tmp_path / "cal.npz"
    assert main(["predict", "--run", str(tmp_path / "a"), "--split", "cal", "--out", str(cal_out)]) == 0
    assert not set(load_predictions(cal_out).ids) & set(pred.ids)  # cal and test are disjoint

    assert (
        main(
            [
                "predict",
                "--run",
                str(tmp_path / "a"),
                "--split",
                "test",
                "--mc-samples",
                "3",
                "--out",
                str(tmp_path / "mc.npz"),
            ]
        )
        == 0
    )
    assert load_predictions(tmp_path / "mc.npz").logits.shape == (3, 48, 2)
    assert main(["predict", "--run", str(tmp_path / "a"), "--tta", "--out", str(tmp_path / "t.npz")]) == 0
    tta = load_predictions(tmp_path / "t.npz")
    # the run trained with h-flips only: no v-flip view, which would be an unseen input
    assert tta.sample_kind == "tta" and tta.provenance["tta_views"] == ["identity", "hflip"]
    assert tta.logits.shape == (2, 48, 2)
    assert (
        main(["predict", "--run", str(tmp_path / "a"), "--run", str(tmp_path / "b"), "--out", str(tmp_path / "e.npz")])
        == 0
    )
    ens = load_predictions(tmp_path / "e.npz")
    assert ens.logits.shape == (2, 48, 2) and ens.sample_kind == "ensemble"
    np.testing.assert_allclose(ens.logits[0], pred.logits, rtol=1e-5, atol=1e-5)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert (
        main(["train", "--dataset", "pneumoniamnist", "--model", "unet", "--epochs", "1", "--out", str(tmp_path / "r")])
        == 2
    )


def test_filesystem_and_run_folder_errors_are_one_line(tmp_path, capsys):
    from medsure.artifact import make_predictions, save_predictions

    pred = save_predictions(
        tmp_path / "p.npz", make_predictions(np.zeros((30, 2), np.float32), labels=np.arange(30) % 2)
    )
    # --out is an existing folder
    assert main(["calibration", "--cal", str(pred), "--test", str(pred), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    # a run folder whose config.json is broken
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    assert main(["predict", "--run", str(broken), "--out", str(tmp_path / "x.npz")]) == 2
    assert "config.json: got JSONDecodeError" in capsys.readouterr().err
