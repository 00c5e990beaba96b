"""load_dataset on the embedded copies and on ../shared/data (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from medsure.data import (
    embedded_manifest,
    load_dataset,
    near_duplicate_groups,
    official_splits,
    split_dataset,
)
from medsure.errors import ChecksumError, DataUnavailableError, MedsureInputError

from conftest import shared_path


def check_dataset(ds, *, n, size, channels, task, n_classes):
    assert len(ds) == n
    assert ds.images.shape[1:] == (size, size, channels)
    assert ds.task == task and ds.n_classes == n_classes
    assert len(set(ds.ids.tolist())) == n, "ids must be unique"
    if task == "classification":
        assert set(np.unique(ds.targets)) == set(range(n_classes)), "every class present"
    else:
        assert ds.targets.shape == (n, size, size)
        assert set(np.unique(ds.targets)) == set(range(n_classes))


@pytest.mark.parametrize(
    "name,n,counts,names",
    [
        ("pneumoniamnist", (4708, 524, 624), None, ["normal", "pneumonia"]),
        ("breastmnist", (546, 78, 156), None, ["malignant", "normal, benign"]),
    ],
)
def test_embedded_medmnist(name, n, counts, names):
    ds = load_dataset(name)
    check_dataset(ds, n=sum(n), size=28, channels=1, task="classification", n_classes=2)
    assert ds.images.dtype == np.uint8 and ds.class_names.tolist() == names
    sizes = [int((ds.meta["source_split"] == s).sum()) for s in ("train", "val", "test")]
    assert sizes == list(n)
    assert [len(p) for p in official_splits(ds).values()] == list(n)
    assert ds.provenance["source"] == "embedded" and ds.provenance["verified"] is True


def test_embedded_busi_has_duplicate_groups():
    ds = load_dataset("busi")
    check_dataset(ds, n=780, size=64, channels=1, task="classification", n_classes=3)
    assert np.bincount(ds.targets).tolist() == [437, 210, 133]
    groups = np.bincount(ds.meta["dup_group"])
    # the data README reports about 19 % near-duplicates; our groups must find a comparable share
    redundant = len(ds) - len(groups)
    assert 0.10 * len(ds) < redundant < 0.30 * len(ds)
    assert len(load_dataset("busi", image_size=32).images[0]) == 32
    with pytest.raises(MedsureInputError, match="not upsampled"):
        load_dataset("busi", image_size=128)


def test_embedded_msd_lung():
    ds = load_dataset("msd_lung")
    check_dataset(ds, n=260, size=48, channels=1, task="segmentation", n_classes=2)
    assert ds.images.dtype == np.float32 and ds.images.min() >= 0 and ds.images.max() <= 1
    assert sorted(set(ds.meta["source_split"])) == ["test", "val"]


def test_embedded_files_are_small_and_licensed():
    from medsure.data.registry import EMBEDDED_DIR

    manifest = embedded_manifest()
    assert set(manifest) == {"pneumoniamnist", "breastmnist", "busi", "busi_joint", "msd_lung"}
    total = sum((EMBEDDED_DIR / e["file"]).stat().st_size for e in manifest.values())
    assert total < 15e6
    for entry in manifest.values():
        assert entry["license"] and entry["citation"]
    assert (EMBEDDED_DIR / "ATTRIBUTION.md").is_file() and (EMBEDDED_DIR / "LICENSE.md").is_file()


def test_unknown_name_and_option_raise():
    with pytest.raises(MedsureInputError, match=r"dataset: got .nosuchset.; expected a known dataset"):
        load_dataset("nosuchset")
    with pytest.raises(MedsureInputError, match="unknown option"):
        load_dataset("busi", colour=True)
    with pytest.raises(MedsureInputError, match="image_size"):
        load_dataset("busi", image_size=0)


def test_missing_root_names_expected_path(tmp_path):
    with pytest.raises(DataUnavailableError, match=str(tmp_path)):
        load_dataset("isic2017", root=tmp_path)


def test_medmnist_other_size_needs_download_or_root():
    with pytest.raises(DataUnavailableError, match=r"pneumoniamnist_64\.npz"):
        load_dataset("pneumoniamnist", image_size=64)


# ----------------------------------------------------------------- real data
def test_medmnist_shared_copy_fails_official_md5_unless_verify_false():
    folder = shared_path("medmnist")
    with pytest.raises(ChecksumError, match="28209eda62fecd6e6a2d98b1501bb15f"):
        load_dataset("pneumoniamnist", root=folder.parent)
    ds = load_dataset("pneumoniamnist", root=folder.parent, verify=False)
    assert ds.provenance["verified"] is False
    assert ds.provenance["expected_md5"] == "28209eda62fecd6e6a2d98b1501bb15f"
    assert ds.provenance["md5"] != ds.provenance["expected_md5"]
    assert len(ds) == 5856


def test_busi_from_folder_matches_embedded_groups():
    folder = shared_path("busi")
    ds = load_dataset("busi", root=folder, image_size=32)
    emb = load_dataset("busi")
    check_dataset(ds, n=780, size=32, channels=1, task="classification", n_classes=3)
    assert ds.ids.tolist() == emb.ids.tolist()
    assert np.array_equal(ds.meta["dup_group"], emb.meta["dup_group"])
    assert any("(" in i and " " in i for i in ds.ids), "file names with spaces and parentheses"


def test_busi_duplicate_hash_groups_identical_copies():
    ds = load_dataset("busi")
    doubled = np.concatenate([ds.images[:50], ds.images[:50]])
    groups = near_duplicate_groups(doubled, max_distance=0)
    assert np.array_equal(groups[:50], groups[50:])


def test_isic2017():
    shared_path("isic2017")
    ds = load_dataset("isic2017", image_size=32)
    check_dataset(ds, n=2150, size=32, channels=3, task="classification", n_classes=2)
    split = ds.meta["source_split"]
    assert int((split == "train").sum()) == 2000 and int((split == "val").sum()) == 150
    assert int(ds.targets[split == "train"].sum()) == 374 and int(ds.targets[split == "val"].sum()) == 30
    assert set(np.unique(ds.meta["sex"])) <= {"female", "male", "unknown"}
    age = ds.meta["age"]
    assert np.isnan(age).any() and np.nanmin(age) >= 0 and np.nanmax(age) <= 100


def test_isic2017_test_is_unlabelled():
    shared_path("isic2017", "ISIC-2017_Test_v2_Data")
    ds = load_dataset("isic2017", image_size=16, subset="test")
    assert len(ds) == 600 and ds.targets is None


def test_ph2_modes():
    shared_path("ph2")
    cls = load_dataset("ph2", image_size=32)
    check_dataset(cls, n=200, size=32, channels=3, task="classification", n_classes=3)
    assert np.bincount(cls.targets).tolist() == [80, 80, 40]
    binary = load_dataset("ph2", image_size=32, binary_melanoma=True)
    assert binary.class_names.tolist() == ["non-melanoma", "melanoma"]
    assert np.array_equal(binary.targets, (cls.targets == 2).astype(np.int64))
    seg = load_dataset("ph2", image_size=32, task="segmentation")
    check_dataset(seg, n=200, size=32, channels=3, task="segmentation", n_classes=2)
    with pytest.raises(MedsureInputError, match="task"):
        load_dataset("ph2", task="detection")


def test_jsrt():
    shared_path("jsrt")
    ds = load_dataset("jsrt", image_size=32)
    check_dataset(ds, n=247, size=32, channels=1, task="segmentation", n_classes=4)
    assert ds.class_names.tolist() == ["background", "right lung", "left lung", "heart"]
    # right lung is on the image's left in a PA chest film
    cols = np.arange(32)
    right_col = (ds.targets == 1).sum(axis=(0, 1)) @ cols / (ds.targets == 1).sum()
    left_col = (ds.targets == 2).sum(axis=(0, 1)) @ cols / (ds.targets == 2).sum()
    assert right_col < left_col
    assert sorted(set(ds.meta["nodule"])) == ["benign", "malignant", "non-nodule"]


@pytest.mark.parametrize("name,n", [("kvasir", 998), ("cvc", 609)])
def test_polyps(name, n):
    shared_path("polyp")
    ds = load_dataset(name, image_size=32)
    check_dataset(ds, n=n, size=32, channels=3, task="segmentation", n_classes=2)
    fraction = ds.targets.mean()
    assert 0.02 < fraction < 0.5


def test_msd_lung_from_h5_matches_embedded():
    folder = shared_path("msd_lung")
    ds = load_dataset("msd_lung", root=folder)
    emb = load_dataset("msd_lung")
    assert np.array_equal(ds.images, emb.images) and np.array_equal(ds.targets, emb.targets)


def test_loaded_isic_split_is_group_free_and_stratified():
    shared_path("isic2017")
    ds = load_dataset("isic2017", image_size=16)
    parts = split_dataset(ds, seed=0, fractions={"train": 0.5, "cal": 0.25, "test": 0.25})
    counts = np.bincount(ds.targets)
    for name, frac in (("train", 0.5), ("cal", 0.25), ("test", 0.25)):
        assert np.all(np.abs(np.bincount(parts[name].targets, minlength=2) - frac * counts) < 1 + 1e-9)


def test_busi_label_conflicts_are_flagged():
    ds = load_dataset("busi")
    conflict = ds.meta["label_conflict"]
    # the README reports a few lesions filed under both benign and malignant
    assert 0 < conflict.sum() < 0.1 * len(ds)
    for group in np.unique(ds.meta["dup_group"][conflict]):
        assert len(np.unique(ds.targets[ds.meta["dup_group"] == group])) > 1


def test_busi_original_release_with_mixed_image_sizes(tmp_path):
    # the published BUSI folders hold images of many sizes (and *_mask.png files to skip)
    from PIL import Image

    from medsure.data import load_dataset

    rng = np.random.default_rng(0)
    sizes = {"benign": [(500, 400), (560, 450)], "malignant": [(300, 300)], "normal": [(610, 470)]}
    for cls, shapes in sizes.items():
        (tmp_path / cls).mkdir()
        for i, (w, h) in enumerate(shapes):
            Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(tmp_path / cls / f"{cls} ({i + 1}).png")
            Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / cls / f"{cls} ({i + 1})_mask.png")
    ds = load_dataset("busi", root=tmp_path, image_size=64)
    assert len(ds) == 4 and ds.images.shape[1:3] == (64, 64)
    assert np.bincount(ds.targets).tolist() == [2, 1, 1]
