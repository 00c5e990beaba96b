"""``medsure certify --engine ray``: parts certified on Ray actors merge into exactly the
single-process cert.json / cert.npz; resumable; bad engine options fail in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from medsure.cli import main
from medsure.cli._engine import parts_folder

from conftest import shared_path


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def jsrt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny U-Net on JSRT (32 px, 4 labels), one short epoch: certificates need not be good, only equal."""
    root = shared_path("jsrt").parent
    out = tmp_path_factory.mktemp("ray_certify") / "seg"
    args = ["train", "--dataset", "jsrt", "--root", str(root), "--model", "unet", "--image-size", "32"]
    common = ["--epochs", "1", "--max-samples", "12", "--threads", "1", "--batch-size", "8"]
    assert main([*args, *common, "--out", str(out)]) == 0
    return out


def _certify(run: Path, out: Path, *extra: str) -> list[str]:
    return [
        "certify", "--run", str(run), "--limit", "5", "--n0", "4", "--n", "12", "--alpha", "0.01",
        "--batch-size", "6", "--device", "cpu", "--out", str(out), "--masks", str(out.with_suffix(".npz")), *extra,
    ]  # fmt: skip


def _same_certification(a: Path, b: Path) -> None:
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    for cert in (ja, jb):
        cert.pop("seconds_per_image")  # wall time
    assert ja == jb
    na, nb = np.load(a.with_suffix(".npz")), np.load(b.with_suffix(".npz"))
    assert sorted(na.files) == sorted(nb.files)
    for key in na.files:
        np.testing.assert_array_equal(na[key], nb[key], err_msg=key)


def test_certify_ray_without_ray_says_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, jsrt_run: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(_certify(jsrt_run, tmp_path / "c.json", "--engine", "ray")) == 2
    assert "pip install 'medsure[ray]'" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_certify_engine_options_need_engine_ray(tmp_path: Path, capsys: pytest.CaptureFixture, jsrt_run: Path) -> None:
    for extra, named in ((["--workers", "2"], "--workers"), (["--shard-size", "4"], "--shard-size")):
        assert main(_certify(jsrt_run, tmp_path / "c.json", *extra)) == 2
        assert named in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'medsure[ray]')")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--workers", "0"], "--workers: got 0; expected an integer >= 1"),
        (["--address", "127.0.0.1:1"], "--address: got '127.0.0.1:1', which cannot be reached"),
        (["--shard-size", "0"], "--shard-size"),
    ],
)
def test_certify_ray_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture, jsrt_run: Path, extra: list, named: str
) -> None:
    assert main(_certify(jsrt_run, tmp_path / "c.json", "--engine", "ray", *extra)) == 2
    assert named in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.realdata
def test_certify_ray_equals_single_process_and_resumes(
    local_ray, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, jsrt_run: Path
) -> None:
    from medsure.cli import _engine

    single, remote = tmp_path / "single.json", tmp_path / "ray.json"
    assert main(_certify(jsrt_run, single)) == 0
    engine = ("--engine", "ray", "--workers", "2", "--shard-size", "2")
    assert main(_certify(jsrt_run, remote, *engine, "--report", str(tmp_path / "ray.html"))) == 0
    _same_certification(single, remote)
    assert "Certified robustness" in (tmp_path / "ray.html").read_text()
    assert not parts_folder(remote).exists()  # merged into the outputs, then removed
    counts = np.load(single.with_suffix(".npz"))["counts"]
    assert counts.min() < counts.max()  # not a trivial (constant) certificate

    # a run killed after its parts were written, before the outputs: the parts stay
    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed

    out2 = tmp_path / "resumed.json"
    args2 = _certify(jsrt_run, out2, *engine)
    with monkeypatch.context() as mp:
        mp.setattr(_engine, "merge_certification_parts", killed)
        with pytest.raises(Killed):
            main(args2)
    parts = sorted(parts_folder(out2).glob("part-*.npz"))
    assert [p.name for p in parts] == ["part-00000.npz", "part-00001.npz", "part-00002.npz"]
    assert not out2.exists()
    parts[1].unlink()  # one range lost
    parts[2].write_bytes(b"truncated")  # one range corrupt
    kept = parts[0].stat().st_mtime_ns
    assert main(args2) == 0
    assert _engine.TIMINGS["certify_skipped"] == 1.0  # only the intact part was reused
    _same_certification(single, out2)

    # sequential certification records its settings the same way through Ray
    seq = ("--sequential", "--tolerance", "0.05")
    single_seq, remote_seq = tmp_path / "single_seq.json", tmp_path / "ray_seq.json"
    assert main(_certify(jsrt_run, single_seq, *seq)) == 0
    assert main(_certify(jsrt_run, remote_seq, *seq, *engine)) == 0
    _same_certification(single_seq, remote_seq)
    assert json.loads(remote_seq.read_text())["sequential_settings"]["tolerance"] == 0.05

    # a parts folder of another certification is refused in one line, nothing written
    other = tmp_path / "other.json"
    parts_folder(other).mkdir()
    (parts_folder(other) / "parts.json").write_text(json.dumps({"seed": 123}))
    capsys.readouterr()
    assert main(_certify(jsrt_run, other, *engine)) == 2
    assert "holds another certification" in _one_line_error(capsys)
    assert not other.exists() and kept


@pytest.mark.slow
def test_certify_ray_one_worker_classification(local_ray, tmp_path: Path) -> None:
    run = tmp_path / "cls"
    common = ["--epochs", "1", "--max-samples", "12", "--threads", "1", "--batch-size", "8"]
    assert main(["train", "--dataset", "breastmnist", "--model", "small_cnn", *common, "--out", str(run)]) == 0
    args = [
        "certify", "--run", str(run), "--limit", "5", "--n0", "8", "--n", "40", "--alpha", "0.01", "--device", "cpu",
    ]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "single.json")]) == 0
    engine = ["--engine", "ray", "--workers", "1", "--shard-size", "3"]
    assert main([*args, *engine, "--out", str(tmp_path / "ray.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("single", "ray"))
    a.pop("seconds_per_image"), b.pop("seconds_per_image")
    assert a == b
