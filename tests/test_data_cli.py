"""``medsure datasets`` lists the embedded sets and MedMNIST files, and downloads with MD5 check."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from medsure.cli import main
from medsure.data import medmnist as mm


def test_datasets_listing(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for word in ("busi", "msd_lung", "pneumoniamnist", "CC BY-SA 4.0", "dermamnist", "28/64/128/224", "isic2017"):
        assert word in out


def test_datasets_json(capsys):
    assert main(["datasets", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    busi = next(e for e in info["embedded"] if e["name"] == "busi")
    assert busi["n"] == 780 and busi["classes"] == ["benign", "malignant", "normal"]
    assert {m["flag"] for m in info["medmnist_download"]} >= {"pathmnist", "organsmnist"}


def test_datasets_download(tmp_path, monkeypatch, capsys):
    remote = tmp_path / "remote"
    remote.mkdir()
    arrays = {
        f"{s}_{k}": np.zeros((2, 28, 28) if k == "images" else (2, 1), np.uint8)
        for s in ("train", "val", "test")
        for k in ("images", "labels")
    }
    np.savez(remote / "retinamnist.npz", **arrays)
    digest = hashlib.md5((remote / "retinamnist.npz").read_bytes()).hexdigest()
    monkeypatch.setattr(mm, "ZENODO_RECORD", remote.as_uri())
    info = mm.FLAGS["retinamnist"]
    monkeypatch.setitem(mm.FLAGS, "retinamnist", dataclasses.replace(info, md5={**info.md5, 28: digest}))
    assert main(["datasets", "--download", "retinamnist", "--root", str(tmp_path / "c")]) == 0
    assert digest in capsys.readouterr().out
    assert (tmp_path / "c" / "retinamnist.npz").is_file()
    assert main(["datasets", "--download", "nosuchmnist"]) == 2
    assert "nosuchmnist" in capsys.readouterr().err


def test_datasets_download_no_verify_accepts_a_local_file_and_says_so(tmp_path, capsys):
    root = tmp_path / "c"
    root.mkdir()
    arrays = {
        f"{s}_{k}": np.zeros((2, 28, 28) if k == "images" else (2, 1), np.uint8)
        for s in ("train", "val", "test")
        for k in ("images", "labels")
    }
    np.savez(root / "retinamnist.npz", **arrays)  # not the official file
    assert main(["datasets", "--download", "retinamnist", "--root", str(root)]) == 2
    assert "--no-verify" in capsys.readouterr().err
    assert main(["datasets", "--download", "retinamnist", "--root", str(root), "--no-verify"]) == 0
    assert "NOT verified" in capsys.readouterr().out
