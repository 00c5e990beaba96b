"""Deterministic, stratified, group-respecting dataset splits.

Conformal guarantees need exchangeable calibration and test samples: near-duplicate images
(``meta["dup_group"]``) must never straddle two splits, and class proportions should match
across splits so a small calibration set still sees every class.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from medsure.data.base import ImageDataset
from medsure.utils.random import make_generator
from medsure.validation import describe, input_error


def _check_fractions(fractions: Mapping[str, float], n: int) -> tuple[list[str], np.ndarray]:
    if not isinstance(fractions, Mapping) or not fractions:
        raise input_error("fractions", fractions, "a non-empty dict of split name -> fraction")
    names = [str(k) for k in fractions]
    values = np.asarray([float(v) for v in fractions.values()], dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise input_error("fractions", dict(fractions), "every fraction a finite number > 0")
    if abs(values.sum() - 1.0) > 1e-6:
        raise input_error(
            "fractions",
            f"{describe(dict(fractions))}, summing to {values.sum():.6g}",
            "fractions that sum to 1",
            raw=True,
        )
    too_small = [name for name, v in zip(names, values, strict=True) if n * v < 1]
    if too_small:
        raise input_error(
            "fractions",
            f"{describe(dict(fractions))} for {n} samples",
            "every split at least one sample",
            f"split(s) {too_small} would be empty; use larger fractions or more samples",
            raw=True,
        )
    return names, values


def _largest_remainder(total: int, fractions: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total`` closest to ``total * fractions``.

    Remainders go to the largest fractional parts; ties go to the entries with the largest
    ``tie_break`` (the splits currently furthest below their overall target).
    """
    raw = total * fractions
    counts = np.floor(raw).astype(np.int64)
    left = total - counts.sum()
    if left > 0:
        order = np.lexsort((-tie_break, -(raw - counts)))
        counts[order[:left]] += 1
    return counts


def stratum_labels(ds: ImageDataset) -> np.ndarray:
    """Stratum per sample: class label (classification) or has-foreground (segmentation)."""
    if ds.targets is None:
        return np.zeros(len(ds), dtype=np.int64)
    if ds.task == "segmentation":
        return np.asarray((ds.targets.reshape(len(ds), -1) > 0).any(axis=1), dtype=np.int64)
    return np.asarray(ds.targets, dtype=np.int64)


def split_indices(
    strata: np.ndarray, groups: np.ndarray | None, *, seed: int | np.random.Generator, fractions: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """Assign sample indices to named splits.

    Parameters
    ----------
    strata : int ndarray (N,), stratum per sample (all zeros for an unstratified split)
    groups : int ndarray (N,) or None; samples sharing a group go to the same split. A group
        counts in the stratum most of its members belong to (ties: smallest stratum id).
    seed : seed or numpy Generator
    fractions : split name -> fraction, all > 0, summing to 1

    Returns
    -------
    dict name -> sorted int64 indices; disjoint, covering 0..N-1. Without groups each stratum's
    count per split is within one sample of ``fractions * stratum size``.
    """
    strata = np.asarray(strata)
    n = len(strata)
    names, fracs = _check_fractions(fractions, n)
    rng = make_generator(seed)
    if groups is None:
        groups = np.arange(n)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise input_error("groups", f"shape {groups.shape}", f"shape ({n},), one group per sample", raw=True)
    _, group_index = np.unique(groups, return_inverse=True)
    n_groups = int(group_index.max()) + 1 if n else 0
    _, stratum_index = np.unique(strata, return_inverse=True)
    n_strata = int(stratum_index.max()) + 1 if n else 0
    # group stratum = majority stratum of its members
    votes = np.zeros((n_groups, max(n_strata, 1)), dtype=np.int64)
    np.add.at(votes, (group_index, stratum_index), 1)
    group_stratum = votes.argmax(axis=1)
    group_size = np.bincount(group_index, minlength=n_groups)

    assigned = np.zeros(len(names), dtype=np.int64)  # samples per split so far
    seen = 0
    group_split = np.empty(n_groups, dtype=np.int64)
    for s in range(n_strata):
        members = np.nonzero(group_stratum == s)[0]
        size_s = int(group_size[members].sum())
        # overall deficit decides which split gets this stratum's rounding remainder
        overall_gap = (seen + size_s) * fracs - assigned
        target = _largest_remainder(size_s, fracs, overall_gap)
        # random order, then big groups first so they are placed while there is room
        members = members[rng.permutation(len(members))]
        members = members[np.argsort(-group_size[members], kind="stable")]
        filled = np.zeros(len(names), dtype=np.int64)
        for g in members:
            deficit = target - filled
            choice = int(np.argmax(deficit))
            group_split[g] = choice
            filled[choice] += group_size[g]
        assigned += filled
        seen += size_s
    sample_split = group_split[group_index]
    out = {name: np.nonzero(sample_split == i)[0].astype(np.int64) for i, name in enumerate(names)}
    empty = [name for name, idx in out.items() if len(idx) == 0]
    if empty:
        raise input_error(
            "groups",
            f"{n_groups} groups for fractions {describe(dict(fractions))}",
            "enough groups for every split",
            f"split(s) {empty} came out empty",
            raw=True,
        )
    return out


def split_dataset(
    ds: ImageDataset,
    *,
    seed: int,
    fractions: dict[str, float],
    stratify: bool = True,
    group_key: str | None = "dup_group",
) -> dict[str, ImageDataset]:
    """Split ``ds`` into named subsets, deterministically from ``seed``.

    Parameters
    ----------
    ds : ImageDataset
    seed : int; the same seed and dataset give the same split
    fractions : e.g. ``{"train": 0.6, "cal": 0.2, "test": 0.2}``; each > 0, summing to 1
    stratify : keep class proportions (segmentation: proportion of masks with foreground)
    group_key : ``meta`` key of group ids kept together (near-duplicates, patients). The
        default ``"dup_group"`` is used when present and ignored when absent; any other key
        must exist. None disables grouping.

    Returns
    -------
    dict name -> ImageDataset (samples in original order); provenance records the split.
    """
    groups = None
    if group_key is not None:
        if group_key in ds.meta:
            groups = np.asarray(ds.meta[group_key])
        elif group_key != "dup_group":
            raise input_error(
                "group_key", group_key, f"a key of the dataset's meta: {', '.join(sorted(ds.meta)) or 'none'}"
            )
    strata = stratum_labels(ds) if stratify else np.zeros(len(ds), dtype=np.int64)
    indices = split_indices(strata, groups, seed=seed, fractions=fractions)
    out = {}
    for name, index in indices.items():
        part = ds.subset(index)
        provenance = dict(ds.provenance)
        provenance["split"] = {
            "name": name,
            "seed": seed,
            "fractions": dict(fractions),
            "stratify": stratify,
            "group_key": group_key if groups is not None else None,
            "n": len(index),
        }
        out[name] = ImageDataset(
            images=part.images,
            targets=part.targets,
            ids=part.ids,
            class_names=part.class_names,
            task=part.task,
            meta=part.meta,
            provenance=provenance,
        )
    return out


def official_splits(ds: ImageDataset) -> dict[str, ImageDataset]:
    """Subsets by ``meta["source_split"]`` (the source's own train/val/test), in that order."""
    if "source_split" not in ds.meta:
        raise input_error(
            "dataset meta", f"keys {sorted(ds.meta)}", "a 'source_split' key", "use split_dataset instead", raw=True
        )
    labels = np.asarray(ds.meta["source_split"]).astype(str)
    order = [s for s in ("train", "val", "test") if s in labels] + sorted(set(labels) - {"train", "val", "test"})
    return {s: ds.subset(np.nonzero(labels == s)[0]) for s in order}
