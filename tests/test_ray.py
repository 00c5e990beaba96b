"""`medsure predict --engine ray`: shards predicted on Ray actors equal the local engine's shards."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from medsure.artifact import load_predictions
from medsure.cli import main
from medsure.shards import read_manifest, shard_name

from realpreds import trained_run


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_engine_ray_without_ray_says_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    run = str(trained_run("pneumoniamnist").run_dir)
    assert main(["predict", "--run", run, "--engine", "ray", "--out", str(tmp_path / "p")]) == 2
    assert "pip install 'medsure[ray]'" in _one_line_error(capsys)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--workers", "2"], "--workers"),  # without --engine ray
        (["--address", "auto"], "--address"),
    ],
)
def test_ray_options_need_engine_ray(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list, named: str) -> None:
    run = str(trained_run("pneumoniamnist").run_dir)
    assert main(["predict", "--run", run, *extra, "--out", str(tmp_path / "p.npz")]) == 2
    assert named in _one_line_error(capsys) and not (tmp_path / "p.npz").exists()


ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'medsure[ray]')")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--workers", "0"], "--workers: got 0; expected an integer >= 1"),
        (["--address", "127.0.0.1:1"], "--address: got '127.0.0.1:1', which cannot be reached"),
        (["--address", "nonsense"], "--address: got 'nonsense'; expected auto or HOST:PORT"),
        (["--gpus-per-worker", "-1"], "--gpus-per-worker"),
    ],
)
def test_ray_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list, named: str) -> None:
    run = str(trained_run("pneumoniamnist").run_dir)
    assert main(["predict", "--run", run, "--engine", "ray", *extra, "--out", str(tmp_path / "p")]) == 2
    assert named in _one_line_error(capsys)
    assert not (tmp_path / "p").exists()


def test_ray_shards_equal_local_shards_and_resume(local_ray, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = str(trained_run("pneumoniamnist").run_dir)
    common = ["predict", "--run", run, "--split", "test", "--mc-samples", "3", "--shard-size", "80"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert main([*common, "--engine", "ray", "--workers", "2", "--out", str(tmp_path / "ray")]) == 0
    local, remote = load_predictions(tmp_path / "local"), load_predictions(tmp_path / "ray")
    np.testing.assert_array_equal(remote.ids, local.ids)
    np.testing.assert_array_equal(remote.labels, local.labels)
    # MC dropout seeded per case: the same masks whichever worker ran a case (float32 sums of
    # a conv may differ in the last bits between thread counts)
    np.testing.assert_allclose(remote.logits, local.logits, rtol=1e-5, atol=1e-5)
    assert not np.allclose(remote.logits[0], remote.logits[1])  # the MC passes differ
    # one worker and another shard size: still the numbers of the single file
    single = ["predict", "--run", run, "--split", "test", "--mc-samples", "3", "--out", str(tmp_path / "one.npz")]
    assert main(single) == 0
    one_worker = [*common[:-1], "130", "--engine", "ray", "--workers", "1", "--out", str(tmp_path / "ray1")]
    assert main(one_worker) == 0
    one = load_predictions(tmp_path / "one.npz")
    for other in (remote, load_predictions(tmp_path / "ray1")):
        np.testing.assert_allclose(other.logits, one.logits, rtol=1e-5, atol=1e-5)
    manifest = read_manifest(tmp_path / "ray")
    assert manifest.complete and len(manifest.shards) == 4
    # a lost shard is the only one predicted again
    (tmp_path / "ray" / shard_name(2)).unlink()
    kept = (tmp_path / "ray" / shard_name(0)).stat().st_mtime_ns
    capsys.readouterr()
    assert main([*common, "--engine", "ray", "--workers", "2", "--out", str(tmp_path / "ray")]) == 0
    assert "(3 already written, skipped)" in capsys.readouterr().out
    assert (tmp_path / "ray" / shard_name(0)).stat().st_mtime_ns == kept
    np.testing.assert_allclose(load_predictions(tmp_path / "ray").logits, local.logits, rtol=1e-5, atol=1e-5)
