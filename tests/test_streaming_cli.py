"""`medsure stream`: the streaming analyses on shard folders give the in-memory commands' numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medsure.artifact import Predictions, save_predictions
from medsure.calibration.metrics import calibration_summary
from medsure.cli import main
from medsure.segmentation.conformal_mask import ConformalMask
from medsure.shards import ShardWriter, shard_ranges

from realpreds import classification_predictions, segmentation_predictions


def to_folder(pred: Predictions, folder: Path, size: int) -> str:
    ranges = shard_ranges(pred.n_samples, size)
    writer = ShardWriter(folder, task=pred.task, class_names=pred.class_names, n_shards=len(ranges))
    for i, (a, b) in enumerate(ranges):
        writer.write(i, pred.subset(np.arange(a, b)))
    writer.finish()
    return str(folder)


def test_stream_conformal_equals_conformal_command(tmp_path: Path) -> None:
    cal, test = classification_predictions("busi")
    save_predictions(tmp_path / "cal.npz", cal)
    save_predictions(tmp_path / "test.npz", test)
    c, t = to_folder(cal, tmp_path / "cal", 40), to_folder(test, tmp_path / "test", 40)
    out = [str(tmp_path / "s.json"), str(tmp_path / "m.json")]
    assert main(["stream", "conformal", "--cal", c, "--test", t, "--method", "aps", "--out", out[0]]) == 0
    files = ["--cal", str(tmp_path / "cal.npz"), "--test", str(tmp_path / "test.npz")]
    assert main(["conformal", "--method", "aps", *files, "--out", out[1]]) == 0
    streamed, memory = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("s", "m"))
    for key in ("coverage", "mean_set_size", "size_histogram", "per_class_coverage", "coverage_band"):
        if key in memory:
            assert streamed[key] == memory[key], key


def test_stream_calibration_and_mask(tmp_path: Path) -> None:
    _, test = classification_predictions("isic2017")
    out = tmp_path / "c.json"
    assert main(["stream", "calibration", "--test", to_folder(test, tmp_path / "t", 50), "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    for key, value in calibration_summary(test.probabilities(), test.labels).items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    cal, seg = segmentation_predictions("msd_lung")
    out = tmp_path / "m.json"
    c, t = to_folder(cal, tmp_path / "sc", 20), to_folder(seg, tmp_path / "st", 20)
    assert main(["stream", "conformal-mask", "--cal", c, "--test", t, "--alpha", "0.2", "--out", str(out)]) == 0
    mask = ConformalMask(0.2).fit(cal)
    got = json.loads(out.read_text())
    assert got["lambda"] == mask.lambda_.tolist()
    assert got["mean_fnr"] == pytest.approx(mask.fnr(seg).mean(axis=0).tolist(), rel=1e-12)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["conformal"], "--cal: got None; expected a calibration shard folder or file"),
        (["conformal", "--cal", "CAL", "--param", "lam"], "--param: got 'lam'; expected NAME=VALUE"),
        (["calibration", "--bins", "0"], "--bins: got 0"),
    ],
)
def test_stream_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list, named: str) -> None:
    _, test = classification_predictions("busi")
    t = to_folder(test, tmp_path / "t", 50)
    argv = [a if a != "CAL" else t for a in argv]
    out = tmp_path / "r.json"
    assert main(["stream", *argv, "--test", t, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert not out.exists()
