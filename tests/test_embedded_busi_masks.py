"""The embedded BUSI lesion masks (``busi_masks_64.npz``) and the embedded ``busi_joint``: the
masks equal those ``busi_joint`` builds from ../shared/data, the manifest's MD5 is the file's, and
``busi_joint`` without ``root=`` falls back to the embedded copy like ``busi`` does."""

from __future__ import annotations

import numpy as np
import pytest

from medsure.data import load_dataset
from medsure.data.joint import joint_labels
from medsure.data.medmnist import md5sum
from medsure.data.registry import EMBEDDED_DIR, embedded_manifest
from medsure.errors import MedsureInputError

from conftest import shared_path


def test_manifest_lists_the_masks_with_their_md5_and_licence():
    entry = embedded_manifest()["busi_joint"]
    path = EMBEDDED_DIR / entry["file"]
    assert entry["file"] == "busi_masks_64.npz" and md5sum(path) == entry["md5"]
    assert entry["license"] == "CC BY 4.0" and entry["citation"].startswith("Al-Dhabyani")
    assert entry["n"] == 780 and entry["image_size"] == 64
    assert path.stat().st_size < 200_000  # small: bool masks, compressed
    assert entry["file"] in (EMBEDDED_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    with np.load(path, allow_pickle=False) as npz:
        assert npz["masks"].dtype == np.bool_ and npz["masks"].shape == (780, 64, 64)
        with np.load(EMBEDDED_DIR / "busi_64.npz", allow_pickle=False) as images:
            assert np.array_equal(npz["ids"], images["ids"])  # same images, same order


def test_busi_joint_without_root_is_the_embedded_copy(monkeypatch, tmp_path):
    # no shared data anywhere: the embedded copy is used, as for ``busi``
    monkeypatch.setenv("MEDSURE_DATA_ROOT", str(tmp_path / "nothing"))
    ds = load_dataset("busi_joint")
    busi = load_dataset("busi")
    labels, names = joint_labels(ds)
    assert ds.provenance["source"] == "embedded" and ds.provenance["verified"]
    assert ds.image_size == (64, 64) and len(ds) == 780 and names == ["benign", "malignant", "normal"]
    assert np.array_equal(ds.images, busi.images) and np.array_equal(labels, busi.targets)
    assert np.array_equal(ds.ids, busi.ids) and np.array_equal(ds.meta["dup_group"], busi.meta["dup_group"])
    assert set(np.unique(ds.targets)) == {0, 1}
    empty = ds.targets.reshape(len(ds), -1).sum(1) == 0
    assert empty[labels == 2].all() and not empty[labels != 2].any()  # normal images: empty masks
    small = load_dataset("busi_joint", image_size=32)
    assert small.targets.shape == (780, 32, 32) and set(np.unique(small.targets)) == {0, 1}


def test_embedded_busi_joint_refuses_a_larger_size():
    with pytest.raises(MedsureInputError, match=r"image_size: got 128; expected at most 64.*busi_masks"):
        load_dataset("busi_joint", image_size=128)


@pytest.mark.realdata
@pytest.mark.slow  # reads the 780 BUSI images and masks at 256 px (~10 s)
def test_embedded_masks_equal_the_shared_busi_joint_masks():
    data = shared_path("busi_masks").parent
    shared = load_dataset("busi_joint", root=data, image_size=64)
    embedded = load_dataset("busi_joint")
    assert len(shared) == len(embedded) == 780
    assert np.array_equal(shared.ids, embedded.ids)
    mismatch = (shared.targets != embedded.targets).reshape(780, -1).any(1)
    assert not mismatch.any(), f"{int(mismatch.sum())} masks differ, e.g. {shared.ids[mismatch][:3]}"
    assert np.array_equal(shared.images, embedded.images)
    assert np.array_equal(shared.meta["label"], embedded.meta["label"])
