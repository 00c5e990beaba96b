"""The standard train / val / cal / test split of each dataset, rebuilt identically from a seed.

``val`` is used for early stopping only; ``cal`` and ``test`` are held out from all training
decisions, so conformal calibration and evaluation see data the model never touched.

Policy, by the dataset's official splits (``meta["source_split"]``):

- train, val and test (MedMNIST): official train and val; the official test set is cut into
  equal, stratified ``cal`` and ``test`` halves (exchangeable with each other);
- train and val (ISIC 2017: Training, Validation): the official Training set gives train 65 %,
  val 10 %, cal 25 %; ``test`` is the official Validation set;
- val and test (MSD lung patches, patient-disjoint files): the "val" file gives train 80 % and
  val 20 %; the "test" file is cut into ``cal`` and ``test`` halves;
- no official split: train 50 %, val 15 %, cal 17.5 %, test 17.5 %, stratified, with
  near-duplicate groups (``meta["dup_group"]``) kept within one split;
- a user's manifest with a ``split`` column (``meta["manifest_split"]``): rows keep their split;
  the splits the manifest leaves out are cut from its train rows and its rows without a split,
  in the proportions above, group-disjoint.

Every split's provenance records under ``"groups"`` whether the four splits are disjoint in
``meta["dup_group"]`` (patients, user groups, near-duplicates) — checked, not assumed.
"""

from __future__ import annotations

import numpy as np

from medsure.data.base import ImageDataset

SPLIT_NAMES = ("train", "val", "cal", "test")
DEFAULT_FRACTIONS = {"train": 0.5, "val": 0.15, "cal": 0.175, "test": 0.175}


def standard_splits(ds: ImageDataset, *, seed: int = 0) -> dict[str, ImageDataset]:
    """Split ``ds`` into ``train``, ``val``, ``cal`` and ``test`` (see module docstring).

    Parameters
    ----------
    ds : a labelled dataset from :func:`medsure.data.load_dataset`
    seed : split seed; the same dataset and seed give the same split

    Returns
    -------
    dict with keys "train", "val", "cal", "test"
    """
    ds.require_targets("standard_splits dataset")  # its labels stratify the split
    return _record_groups(_standard_splits(ds, seed))


def _standard_splits(ds: ImageDataset, seed: int) -> dict[str, ImageDataset]:
    from medsure.data import split_dataset

    if "manifest_split" in ds.meta:
        return _manifest_splits(ds, seed)
    source = np.asarray(ds.meta["source_split"]).astype(str) if "source_split" in ds.meta else None
    if source is None:
        return split_dataset(ds, seed=seed, fractions=DEFAULT_FRACTIONS)

    def part(name: str) -> ImageDataset:
        return ds.subset(np.flatnonzero(source == name))

    present = set(source.tolist())
    if {"train", "val", "test"} <= present:
        held_out = split_dataset(
            _flag_train_duplicates(part("test"), part("train")), seed=seed, fractions={"cal": 0.5, "test": 0.5}
        )
        return {"train": part("train"), "val": part("val"), **held_out}
    if present == {"train", "val"}:
        pool = split_dataset(part("train"), seed=seed, fractions={"train": 0.65, "val": 0.10, "cal": 0.25})
        return {**pool, "test": _flag_train_duplicates(part("val"), pool["train"])}
    if present == {"val", "test"}:
        pool = split_dataset(part("val"), seed=seed, fractions={"train": 0.8, "val": 0.2})
        held_out = split_dataset(part("test"), seed=seed, fractions={"cal": 0.5, "test": 0.5})
        return {**pool, **held_out}
    return split_dataset(ds, seed=seed, fractions=DEFAULT_FRACTIONS)


def _manifest_splits(ds: ImageDataset, seed: int) -> dict[str, ImageDataset]:
    """Splits given by the user's manifest; missing ones are cut from the train and unassigned rows."""
    from medsure.data import split_dataset

    given = np.asarray(ds.meta["manifest_split"]).astype(str)
    out = {name: ds.subset(np.flatnonzero(given == name)) for name in SPLIT_NAMES if np.any(given == name)}
    missing = [name for name in SPLIT_NAMES if name not in out]
    pool_index = np.flatnonzero((given == "") | (given == "train"))
    if not missing:
        unassigned = np.flatnonzero(given == "")
        if len(unassigned):  # shared out like the rest of train: keep them in train
            out["train"] = ds.subset(np.flatnonzero((given == "train") | (given == "")))
        return {name: out[name] for name in SPLIT_NAMES}
    fractions = {name: DEFAULT_FRACTIONS[name] for name in ("train", *missing) if name in DEFAULT_FRACTIONS}
    total = sum(fractions.values())
    fractions = {k: v / total for k, v in fractions.items()}
    pool = ds.subset(pool_index)
    if len(pool) == 0:
        from medsure.validation import input_error

        raise input_error(
            "manifest split column",
            f"no train rows and no rows without a split, but no {missing} rows",
            "rows for every split (train, val, cal, test) or rows medsure may share out",
            raw=True,
        )
    carved = split_dataset(pool, seed=seed, fractions=fractions)
    out.update(carved)
    return {name: out[name] for name in SPLIT_NAMES}


def _record_groups(splits: dict[str, ImageDataset]) -> dict[str, ImageDataset]:
    """Check that no ``dup_group`` (patient, user group, near-duplicate component) straddles two
    splits and write the answer into every split's provenance (and so into the run record)."""
    from dataclasses import replace

    from medsure.validation import input_error

    keyed = {k: np.asarray(v.meta["dup_group"]).astype(str) for k, v in splits.items() if "dup_group" in v.meta}
    record: dict[str, object]
    if len(keyed) < len(splits):
        record = {"group_key": None, "group_disjoint": None, "note": "no groups: every image its own group"}
    else:
        seen: dict[str, str] = {}
        shared: list[str] = []
        for name, groups in keyed.items():
            shared += [g for g in np.unique(groups) if seen.setdefault(g, name) != name]
        official = any("source_split" in v.meta for v in splits.values())
        if shared and not official:
            raise input_error(
                "groups",
                f"{len(shared)} group(s) in two splits",
                "every group within one split",
                "report this: medsure's splitter should never do this",
                raw=True,
            )
        n_groups = len(set().union(*(set(g.tolist()) for g in keyed.values())))
        record = {
            "group_key": "dup_group",
            "group_disjoint": not shared,
            "n_groups": n_groups,
            "shared_groups": len(shared),
        }
    return {k: replace(v, provenance={**v.provenance, "groups_across_splits": record}) for k, v in splits.items()}


def _flag_train_duplicates(held_out: ImageDataset, train: ImageDataset) -> ImageDataset:
    """Mark held-out images of an *official* split that nearly duplicate a training image.

    medsure cannot regroup an official split (results must stay comparable with the
    literature), but it can say how much of the held-out set the model has effectively seen:
    ``meta["near_dup_of_train"]`` per image and a count in the provenance.
    """
    from dataclasses import replace

    from medsure.data.dedup import near_duplicates_of

    flags = near_duplicates_of(train.images, held_out.images)
    provenance = {
        **held_out.provenance,
        "near_duplicates_of_train": {
            "count": int(flags.sum()),
            "of": len(flags),
            "method": "pixel correlation >= 0.99",
        },
    }
    return replace(held_out, meta={**held_out.meta, "near_dup_of_train": flags}, provenance=provenance)
