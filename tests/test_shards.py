"""Shard folders (medsure.shards): writing, resuming, streaming reads, errors, `medsure predict --shard-size`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medsure.artifact import Predictions, load_predictions, save_predictions
from medsure.cli import main
from medsure.errors import MedsureInputError
from medsure.shards import (
    MANIFEST_NAME,
    ShardWriter,
    concat_predictions,
    iter_shards,
    read_manifest,
    shard_name,
    shard_ranges,
)

from realpreds import classification_predictions, segmentation_predictions, trained_run


def write_shards(pred: Predictions, folder: Path, size: int, *, only: set[int] | None = None) -> ShardWriter:
    """Write ``pred`` as a shard folder of ``size`` cases per shard (``only``: those shards, unfinished)."""
    ranges = shard_ranges(pred.n_samples, size)
    writer = ShardWriter(
        folder, task=pred.task, class_names=pred.class_names, n_shards=len(ranges), identity={"size": size}
    )
    for i, (a, b) in enumerate(ranges):
        if only is None or i in only:
            writer.write(i, pred.subset(np.arange(a, b)))
    if only is None:
        writer.finish()
    return writer


def assert_same(a: Predictions, b: Predictions) -> None:
    assert a.task == b.task
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.class_names, b.class_names)
    for x, y in ((a.labels, b.labels), (a.masks, b.masks), (a.thumbnails, b.thumbnails)):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert sorted(a.meta) == sorted(b.meta)
    for key in a.meta:
        np.testing.assert_array_equal(a.meta[key], b.meta[key])
    assert a.sample_kind == b.sample_kind


def test_shard_ranges_cover_every_case_once() -> None:
    assert shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_ranges(0, 4) == []
    assert shard_ranges(8, 4) == [(0, 4), (4, 8)]
    with pytest.raises(MedsureInputError, match="shard_size"):
        shard_ranges(10, 0)


@pytest.mark.parametrize("mc", [0, 4])
def test_roundtrip_classification(tmp_path: Path, mc: int) -> None:
    _, test = classification_predictions("pneumoniamnist", mc_dropout=mc)
    folder = tmp_path / "preds"
    write_shards(test, folder, 150)
    manifest = read_manifest(folder)
    assert manifest.complete and manifest.n_total == test.n_samples
    assert [s.n for s in manifest.shards][:-1] == [150] * (len(manifest.shards) - 1)
    parts = list(iter_shards(folder))
    assert [p.n_samples for p in parts] == [s.n for s in manifest.shards]
    assert_same(load_predictions(folder), test)  # the loader accepts a shard folder
    assert_same(concat_predictions(parts), test)


def test_roundtrip_segmentation(tmp_path: Path) -> None:
    _, test = segmentation_predictions("msd_lung", mc_dropout=3)
    write_shards(test, tmp_path / "seg", 40)
    assert_same(load_predictions(tmp_path / "seg", task="segmentation"), test)


def test_plain_file_streams_as_one_shard(tmp_path: Path) -> None:
    _, test = classification_predictions("pneumoniamnist")
    save_predictions(tmp_path / "t.npz", test)
    (only,) = list(iter_shards(tmp_path / "t.npz"))
    assert_same(only, test)


def test_unfinished_folder_is_refused_and_resumes(tmp_path: Path) -> None:
    _, test = classification_predictions("pneumoniamnist")
    folder = tmp_path / "preds"
    write_shards(test, folder, 100, only={0, 2})
    with pytest.raises(MedsureInputError, match=r"unfinished \(2 of \d+ shards written\).*resumes"):
        load_predictions(folder)
    ranges = shard_ranges(test.n_samples, 100)
    writer = ShardWriter(
        folder, task=test.task, class_names=test.class_names, n_shards=len(ranges), identity={"size": 100}
    )
    done = [writer.is_done(i) for i in range(len(ranges))]
    assert done[0] and done[2] and not done[1]
    before = (folder / shard_name(0)).stat().st_mtime_ns
    for i, (a, b) in enumerate(ranges):
        if not writer.is_done(i):
            writer.write(i, test.subset(np.arange(a, b)))
    writer.finish()
    assert (folder / shard_name(0)).stat().st_mtime_ns == before  # a finished shard is not rewritten
    assert_same(load_predictions(folder), test)
    # a shard changed on disk is not counted as done: it is written again
    (folder / shard_name(1)).write_bytes(b"garbage")
    again = ShardWriter(
        folder, task=test.task, class_names=test.class_names, n_shards=len(ranges), identity={"size": 100}
    )
    assert again.is_done(0) and not again.is_done(1)


def test_other_set_in_folder_is_refused(tmp_path: Path) -> None:
    _, test = classification_predictions("pneumoniamnist")
    folder = tmp_path / "preds"
    write_shards(test, folder, 100, only={0})
    with pytest.raises(MedsureInputError, match="holds another prediction set"):
        ShardWriter(folder, task=test.task, class_names=test.class_names, n_shards=4, identity={"size": 999})


def test_changed_missing_and_corrupt_shards_are_named(tmp_path: Path) -> None:
    _, test = classification_predictions("pneumoniamnist")
    folder = tmp_path / "preds"
    write_shards(test, folder, 100)
    shard = folder / shard_name(1)
    original = shard.read_bytes()
    # changed after the manifest: another valid file in its place
    save_predictions(shard, replace(test.subset(np.arange(100, 200)), logits=test.logits[100:200] + 1))
    with pytest.raises(MedsureInputError, match=r"shard-00001\.npz.*SHA-256 differs") as info:
        list(iter_shards(folder))
    assert "\n" not in str(info.value)
    # without hash checks a corrupt file is still named by the loader
    shard.write_bytes(original[: len(original) // 2])
    with pytest.raises(MedsureInputError, match=r"shard-00001\.npz"):
        list(iter_shards(folder, verify=False))
    shard.unlink()
    with pytest.raises(MedsureInputError, match=r"shard-00001\.npz': got missing"):
        load_predictions(folder)


def _rehash(folder: Path) -> None:
    """Make the manifest's hashes match the files on disk (simulates a set assembled by hand)."""
    from medsure.shards import sha256_of

    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for entry in manifest["shards"]:
        entry["sha256"] = sha256_of(folder / entry["name"])
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_shards_disagreeing_on_classes_are_refused(tmp_path: Path) -> None:
    _, test = classification_predictions("pneumoniamnist")
    folder = tmp_path / "preds"
    write_shards(test, folder, 100)
    part = test.subset(np.arange(100, 200))
    save_predictions(folder / shard_name(1), replace(part, class_names=np.array(["a", "b"])))
    _rehash(folder)
    with pytest.raises(MedsureInputError, match=r"shard-00001\.npz'.*class_names \['a', 'b'\].*like the manifest"):
        load_predictions(folder)
    k3 = Predictions(
        task="classification",
        logits=np.zeros((5, 3), np.float32),
        ids=np.array([f"x{i}" for i in range(5)]),
        class_names=np.array(["a", "b", "c"]),
    )
    save_predictions(folder / shard_name(1), k3)
    _rehash(folder)
    with pytest.raises(MedsureInputError, match=r"K=3 classes; expected K=2 like the manifest"):
        load_predictions(folder)


def test_broken_manifest_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "preds"
    folder.mkdir()
    (folder / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(MedsureInputError, match=r"manifest.json.*unreadable JSON"):
        load_predictions(folder)
    (folder / MANIFEST_NAME).write_text(json.dumps({"format": "medsure-shards", "format_version": 1, "task": "x"}))
    with pytest.raises(MedsureInputError, match="missing or invalid field"):
        load_predictions(folder)


# ---- medsure predict --shard-size -------------------------------------------------------------


def test_predict_cli_writes_resumable_shards(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = trained_run("pneumoniamnist").run_dir
    whole, folder = tmp_path / "whole.npz", tmp_path / "sharded"
    assert main(["predict", "--run", str(run), "--split", "test", "--out", str(whole)]) == 0
    assert main(["predict", "--run", str(run), "--split", "test", "--shard-size", "150", "--out", str(folder)]) == 0
    single = load_predictions(whole)
    assert_same(load_predictions(folder), single)  # no MC: sharding changes nothing
    manifest = read_manifest(folder)
    assert len(manifest.shards) == -(-single.n_samples // 150)
    # a killed run: one shard lost; the rerun writes only that one
    (folder / shard_name(1)).unlink()
    kept = (folder / shard_name(0)).stat().st_mtime_ns
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--split", "test", "--shard-size", "150", "--out", str(folder)]) == 0
    assert f"({len(manifest.shards) - 1} already written, skipped)" in capsys.readouterr().out
    assert (folder / shard_name(0)).stat().st_mtime_ns == kept
    assert_same(load_predictions(folder), single)
    # another shard size into the same folder is refused, not mixed
    assert main(["predict", "--run", str(run), "--split", "test", "--shard-size", "100", "--out", str(folder)]) == 2
    assert "holds another prediction set" in capsys.readouterr().err


def test_predict_cli_mc_shards_resume_identically(tmp_path: Path) -> None:
    run = str(trained_run("pneumoniamnist").run_dir)
    args = ["predict", "--run", run, "--split", "test", "--mc-samples", "3", "--shard-size", "100"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    (tmp_path / "b" / shard_name(2)).unlink()
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = load_predictions(tmp_path / "a"), load_predictions(tmp_path / "b")
    assert a.logits.shape[0] == 3
    np.testing.assert_array_equal(a.logits, b.logits)  # per-shard seeds: a resumed run equals a whole one
    assert not np.array_equal(a.logits[0], a.logits[1])  # and the MC passes differ


@pytest.mark.parametrize("value", ["0", "-3"])
def test_predict_cli_bad_shard_size(tmp_path: Path, capsys: pytest.CaptureFixture, value: str) -> None:
    run = str(trained_run("pneumoniamnist").run_dir)
    out = tmp_path / "never"
    assert main(["predict", "--run", run, "--shard-size", value, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--shard-size" in err and "an integer >= 1" in err
    assert not out.exists()


def test_analysis_cli_reads_shard_folder(tmp_path: Path) -> None:
    cal, test = classification_predictions("pneumoniamnist")
    write_shards(cal, tmp_path / "cal", 150)
    write_shards(test, tmp_path / "test", 150)
    save_predictions(tmp_path / "cal.npz", cal)
    save_predictions(tmp_path / "test.npz", test)
    results = []
    for c, t, out in (("cal", "test", "a.json"), ("cal.npz", "test.npz", "b.json")):
        argv = ["conformal", "--method", "aps", "--cal", str(tmp_path / c), "--test", str(tmp_path / t)]
        assert main([*argv, "--out", str(tmp_path / out)]) == 0
        results.append(json.loads((tmp_path / out).read_text()))
    assert results[0]["coverage"] == results[1]["coverage"]
    assert results[0]["size_histogram"] == results[1]["size_histogram"]
