"""split_dataset: disjoint, covering, stratified within one sample, groups kept, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from medsure.data import ImageDataset, load_dataset, split_dataset, split_indices
from medsure.errors import MedsureInputError

FRACTIONS = {"train": 0.6, "cal": 0.2, "test": 0.2}


def toy(n: int = 50, k: int = 3, groups: np.ndarray | None = None, seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    meta = {} if groups is None else {"dup_group": groups}
    return ImageDataset(
        images=rng.integers(0, 255, (n, 4, 4, 1), dtype=np.uint8),
        targets=rng.integers(0, k, n).astype(np.int64),
        ids=np.asarray([f"s{i}" for i in range(n)]),
        class_names=np.asarray(list("abc")[:k]),
        meta=meta,
    )


def check_partition(ds: ImageDataset, parts: dict[str, ImageDataset]) -> None:
    ids = np.concatenate([p.ids for p in parts.values()])
    assert len(ids) == len(ds) and len(set(ids)) == len(ds), "splits must be disjoint and cover every sample"


def check_stratified(ds: ImageDataset, parts: dict[str, ImageDataset], fractions: dict[str, float]) -> None:
    counts = np.bincount(ds.targets, minlength=ds.n_classes)
    for name, part in parts.items():
        got = np.bincount(part.targets, minlength=ds.n_classes)
        assert np.all(np.abs(got - fractions[name] * counts) < 1 + 1e-9), (name, got, fractions[name] * counts)


def test_toy_split_is_partition_stratified_and_deterministic():
    ds = toy(103)
    a = split_dataset(ds, seed=3, fractions=FRACTIONS)
    b = split_dataset(ds, seed=3, fractions=FRACTIONS)
    c = split_dataset(ds, seed=4, fractions=FRACTIONS)
    check_partition(ds, a)
    check_stratified(ds, a, FRACTIONS)
    assert all(np.array_equal(a[k].ids, b[k].ids) for k in a)
    assert not all(np.array_equal(a[k].ids, c[k].ids) for k in a)
    assert a["cal"].provenance["split"]["seed"] == 3


def test_input_dataset_is_not_modified():
    ds = toy(40)
    before = (ds.images.copy(), ds.targets.copy(), ds.ids.copy())
    split_dataset(ds, seed=0, fractions=FRACTIONS)
    assert np.array_equal(ds.images, before[0]) and np.array_equal(ds.targets, before[1])
    assert np.array_equal(ds.ids, before[2])


def test_groups_never_straddle_splits():
    groups = np.repeat(np.arange(30), 3)[:80]
    ds = toy(80, groups=groups)
    for seed in range(5):
        parts = split_dataset(ds, seed=seed, fractions=FRACTIONS)
        check_partition(ds, parts)
        seen = [set(p.meta["dup_group"]) for p in parts.values()]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


@pytest.mark.parametrize(
    "fractions",
    [
        {"a": 0.5, "b": 0.6},
        {"a": 0.0, "b": 1.0},
        {"a": -0.2, "b": 1.2},
        {"a": 0.999, "b": 0.001},
        {},
    ],
)
def test_impossible_fractions_raise(fractions):
    with pytest.raises(MedsureInputError, match="fraction"):
        split_dataset(toy(50), seed=0, fractions=fractions)


def test_too_few_groups_raise():
    ds = toy(20, groups=np.zeros(20, dtype=np.int64))
    with pytest.raises(MedsureInputError, match="empty"):
        split_dataset(ds, seed=0, fractions={"a": 0.5, "b": 0.5})


def test_unknown_group_key_raises_but_absent_default_is_ignored():
    ds = toy(30)
    split_dataset(ds, seed=0, fractions={"a": 0.5, "b": 0.5})  # no dup_group: plain split
    with pytest.raises(MedsureInputError, match="patient"):
        split_dataset(ds, seed=0, fractions={"a": 0.5, "b": 0.5}, group_key="patient")


def test_unstratified_split_sizes():
    idx = split_indices(np.zeros(10), None, seed=0, fractions={"a": 0.7, "b": 0.3})
    assert len(idx["a"]) == 7 and len(idx["b"]) == 3


def test_segmentation_split_stratifies_on_foreground():
    rng = np.random.default_rng(1)
    masks = np.zeros((40, 4, 4), dtype=np.int64)
    masks[:10, 1, 1] = 1  # 10 with foreground
    ds = ImageDataset(
        images=rng.random((40, 4, 4, 1), dtype=np.float32),
        targets=masks,
        ids=np.asarray([str(i) for i in range(40)]),
        class_names=np.asarray(["bg", "fg"]),
        task="segmentation",
    )
    parts = split_dataset(ds, seed=0, fractions={"a": 0.5, "b": 0.5})
    assert [int((p.targets.reshape(len(p), -1).max(1) > 0).sum()) for p in parts.values()] == [5, 5]


# ----------------------------------------------------------------- real data
@pytest.mark.parametrize("name", ["pneumoniamnist", "breastmnist", "busi", "msd_lung"])
def test_embedded_split_properties(name):
    ds = load_dataset(name)
    for seed in range(3):
        parts = split_dataset(ds, seed=seed, fractions=FRACTIONS)
        again = split_dataset(ds, seed=seed, fractions=FRACTIONS)
        assert all(np.array_equal(parts[k].ids, again[k].ids) for k in parts)
        check_partition(ds, parts)
        if "dup_group" not in ds.meta and ds.task == "classification":
            check_stratified(ds, parts, FRACTIONS)


def test_busi_split_keeps_duplicates_together_and_near_stratified():
    ds = load_dataset("busi")
    groups = ds.meta["dup_group"]
    counts = np.bincount(ds.targets)
    for seed in range(5):
        parts = split_dataset(ds, seed=seed, fractions=FRACTIONS)
        seen = [set(p.meta["dup_group"]) for p in parts.values()]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
        # a group may overshoot its split's target by at most the largest group size
        slack = np.bincount(groups).max()
        for name, part in parts.items():
            got = np.bincount(part.targets, minlength=3)
            assert np.all(np.abs(got - FRACTIONS[name] * counts) <= slack + 1), (name, got)


def test_exact_duplicate_groups_hand_case():
    from medsure.data.dedup import exact_duplicate_groups

    a, b = np.zeros((4, 4)), np.ones((4, 4))
    images = np.stack([b, a, b, a.copy(), b + 1])
    np.testing.assert_array_equal(exact_duplicate_groups(images), [0, 1, 0, 1, 2])


def test_msd_lung_duplicate_patches_never_straddle_splits():
    from medsure.data import load_dataset
    from medsure.training.splits import standard_splits

    lung = load_dataset("msd_lung")
    groups = lung.meta["dup_group"]
    assert len(np.unique(groups)) < len(groups)  # the embedded copy holds stored-twice patches
    splits = standard_splits(lung, seed=0)
    seen = {}
    for name, part in splits.items():
        for g in set(part.meta["dup_group"].tolist()):
            assert seen.setdefault(g, name) == name, (g, seen[g], name)


def test_near_duplicates_of_by_pixel_correlation():
    from medsure.data.dedup import near_duplicates_of

    rng = np.random.default_rng(5)
    train = rng.random((20, 8, 8))
    query = np.stack([train[3] * 2 + 1, rng.random((8, 8)), train[7] + rng.normal(0, 0.01, (8, 8))])
    # an affine copy and a lightly noised copy are duplicates; an unrelated image is not
    np.testing.assert_array_equal(near_duplicates_of(train, query), [True, False, True])
    with pytest.raises(MedsureInputError, match="differ in size"):
        near_duplicates_of(train, rng.random((2, 4, 4)))


def test_official_breastmnist_test_images_that_copy_training_images_are_flagged():
    # BreastMNIST's official split was not deduplicated: medsure keeps it (comparability with the
    # paper) but marks the held-out copies and counts them in the provenance
    from medsure.data import load_dataset
    from medsure.training.splits import standard_splits

    splits = standard_splits(load_dataset("breastmnist"), seed=0)
    flags = np.r_[splits["cal"].meta["near_dup_of_train"], splits["test"].meta["near_dup_of_train"]]
    assert 0 < flags.sum() < flags.size
    assert splits["cal"].provenance["near_duplicates_of_train"]["count"] == flags.sum()
