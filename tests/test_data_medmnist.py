"""MedMNIST download (file:// URLs and a patched urlopen; nothing reaches the internet), MD5
checks, provenance and corrupt files."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import urllib.error
from typing import ClassVar

import numpy as np
import pytest

from medsure.data import load_dataset, load_medmnist, load_medmnist_npz
from medsure.data import medmnist as mm
from medsure.errors import ChecksumError, DataUnavailableError, MedsureInputError


def write_medmnist_npz(path, n=(6, 2, 3), size=28, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        shape = (k, size, size) if channels == 1 else (k, size, size, channels)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % 2).reshape(k, 1).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return arrays


def md5_of(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def zenodo(tmp_path, monkeypatch):
    """A fake Zenodo record folder served through file:// with breastmnist MD5s set to its files."""
    remote = tmp_path / "remote"
    remote.mkdir()
    write_medmnist_npz(remote / "breastmnist.npz")
    write_medmnist_npz(remote / "breastmnist_64.npz", size=64, seed=1)
    monkeypatch.setattr(mm, "ZENODO_RECORD", remote.as_uri())
    info = mm.FLAGS["breastmnist"]
    fake = dataclasses.replace(
        info, md5={**info.md5, 28: md5_of(remote / "breastmnist.npz"), 64: md5_of(remote / "breastmnist_64.npz")}
    )
    monkeypatch.setitem(mm.FLAGS, "breastmnist", fake)
    return remote


def test_official_table_facts():
    assert set(mm.FLAGS) == {
        "pathmnist",
        "chestmnist",
        "dermamnist",
        "octmnist",
        "pneumoniamnist",
        "retinamnist",
        "breastmnist",
        "bloodmnist",
        "tissuemnist",
        "organamnist",
        "organcmnist",
        "organsmnist",
    }
    for info in mm.FLAGS.values():
        assert sorted(info.md5) == [28, 64, 128, 224]
        assert all(len(m) == 32 and int(m, 16) >= 0 for m in info.md5.values())
        assert len(set(info.md5.values())) == 4
    pneu = mm.FLAGS["pneumoniamnist"]
    assert pneu.filename(28) == "pneumoniamnist.npz" and pneu.filename(224) == "pneumoniamnist_224.npz"
    assert pneu.url(64).startswith("https://zenodo.org/records/10519652/files/pneumoniamnist_64.npz")
    with pytest.raises(MedsureInputError, match="size: got 32; expected one of 28, 64"):
        pneu.filename(32)


def test_download_verifies_md5_and_records_provenance(zenodo, tmp_path):
    cache = tmp_path / "cache"
    ds = load_medmnist("breastmnist", 64, root=cache, download=True)
    assert (cache / "breastmnist_64.npz").is_file()
    assert ds.images.shape == (11, 64, 64, 1) and ds.targets.tolist()[:4] == [0, 1, 0, 1]
    assert ds.provenance["verified"] is True and ds.provenance["md5"] == ds.provenance["expected_md5"]
    assert ds.meta["source_split"].tolist().count("val") == 2
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")], "temporary file left behind"


def test_load_dataset_download_path(zenodo, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSURE_CACHE_DIR", str(tmp_path / "c"))
    ds = load_dataset("breastmnist", image_size=64, download=True)
    assert ds.image_size == (64, 64) and ds.provenance["verified"] is True
    assert (tmp_path / "c" / "medmnist" / "breastmnist_64.npz").is_file()


def test_download_with_wrong_md5_keeps_nothing(zenodo, tmp_path, monkeypatch):
    info = mm.FLAGS["breastmnist"]
    monkeypatch.setitem(mm.FLAGS, "breastmnist", dataclasses.replace(info, md5={**info.md5, 28: "0" * 32}))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="0" * 32):
        mm.fetch_medmnist("breastmnist", 28, root=cache)
    assert not cache.exists() or not list(cache.iterdir())


def test_local_file_with_other_md5_needs_verify_false(zenodo, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    write_medmnist_npz(cache / "breastmnist.npz", seed=7)  # a different file under the official name
    with pytest.raises(ChecksumError, match="verify=False"):
        load_medmnist("breastmnist", root=cache, download=False)
    ds = load_medmnist("breastmnist", root=cache, download=False, verify=False)
    assert ds.provenance["verified"] is False
    assert ds.provenance["md5"] == md5_of(cache / "breastmnist.npz") != ds.provenance["expected_md5"]


def test_offline_raises_data_unavailable_naming_the_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(mm.urllib.request, "urlopen", offline)
    target = tmp_path / "cache"
    with pytest.raises(DataUnavailableError, match=r"dermamnist_128\.npz") as err:
        mm.fetch_medmnist("dermamnist", 128, root=target)
    assert str(target) in str(err.value)
    with pytest.raises(DataUnavailableError, match="download=True"):
        mm.fetch_medmnist("dermamnist", 128, root=target, download=False)


def test_patched_urlopen_streams_bytes(tmp_path, monkeypatch):
    payload = b"medsure" * 100_000

    class Response(io.BytesIO):
        headers: ClassVar[dict[str, str]] = {"Content-Length": str(len(payload))}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(mm.urllib.request, "urlopen", lambda url, timeout: Response(payload))
    out = mm.download_file(
        "https://example.invalid/x.bin", tmp_path / "x.bin", expected_md5=hashlib.md5(payload).hexdigest()
    )
    assert out.read_bytes() == payload


def test_corrupt_npz_raises_clear_error(tmp_path):
    path = tmp_path / "breastmnist.npz"
    write_medmnist_npz(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MedsureInputError, match="corrupt or truncated"):
        load_medmnist_npz(path, class_names=["a", "b"])
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(MedsureInputError, match=str(path)):
        load_medmnist_npz(path, class_names=["a", "b"])


def test_wrong_layout_and_multilabel_raise(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(MedsureInputError, match="train_images"):
        load_medmnist_npz(path, class_names=["a"])
    np.savez(
        path,
        **{f"{s}_images": np.zeros((2, 28, 28), np.uint8) for s in ("train", "val", "test")},
        **{f"{s}_labels": np.zeros((2, 14), np.uint8) for s in ("train", "val", "test")},
    )
    with pytest.raises(MedsureInputError, match="multi-label"):
        load_medmnist_npz(path, class_names=["a"])
    with pytest.raises(MedsureInputError, match="multi-label"):
        load_medmnist("chestmnist", root=tmp_path, download=False)


def test_rgb_medmnist_layout(tmp_path):
    path = tmp_path / "x.npz"
    write_medmnist_npz(path, channels=3)
    ds = load_medmnist_npz(path, class_names=["a", "b"])
    assert ds.images.shape == (11, 28, 28, 3) and ds.in_channels == 3


def test_embedded_copy_says_what_its_md5_was_checked_against(tmp_path, monkeypatch):
    from medsure.data import load_dataset

    ds = load_dataset("pneumoniamnist")
    assert ds.provenance["verified"] is True
    assert ds.provenance["verified_against"] == "medsure embedded manifest"
    # asking for the official file is honoured, not answered with the embedded re-save
    monkeypatch.setenv("MEDSURE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(mm, "ZENODO_RECORD", (tmp_path / "offline").as_uri())
    with pytest.raises(DataUnavailableError):
        load_dataset("pneumoniamnist", download=True)
