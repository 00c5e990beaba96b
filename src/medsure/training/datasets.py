"""Rebuild the datasets of a run from its recorded dataset name, options and split seed."""

from __future__ import annotations

import json
from typing import Any

from medsure.data.base import ImageDataset
from medsure.validation import check_int, input_error


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["task=segmentation", "binary_melanoma=true"]`` → dict (values parsed as JSON if they can be)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise input_error("dataset option", pair, "KEY=VALUE, e.g. task=segmentation")
        key, value = pair.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def dataset_record(
    name: str,
    *,
    root: str | None,
    image_size: int | None,
    options: dict[str, Any],
    split_seed: int,
    max_samples: int | None,
) -> dict[str, Any]:
    """What a run stores about its data (``TrainConfig.dataset``)."""
    return {
        "name": name,
        "root": root,
        "image_size": image_size,
        "options": dict(options),
        "split_seed": int(split_seed),
        "max_samples": max_samples,
    }


def load_whole(record: dict[str, Any], image_size: int | None = None) -> ImageDataset:
    """The full dataset described by ``record`` (no split)."""
    from medsure.data import load_dataset

    size = image_size if image_size is not None else record.get("image_size")
    return load_dataset(record["name"], root=record.get("root"), image_size=size, **record.get("options", {}))


def load_splits(record: dict[str, Any]) -> dict[str, ImageDataset]:
    """train / val / cal / test of the dataset described by ``record`` (see ``standard_splits``).

    ``max_samples`` keeps only the first N samples of each split (for quick smoke runs).
    """
    from medsure.training.splits import standard_splits

    if not record or "name" not in record:
        raise input_error(
            "the run's dataset record",
            "no dataset name" if record else "no dataset record",
            "a record with the dataset 'name' (train.dataset in config.json)",
            "pass the data explicitly",
            raw=True,
        )
    splits = standard_splits(load_whole(record), seed=int(record.get("split_seed", 0)))
    cap = record.get("max_samples")
    if cap:
        splits = {k: _stratified_subset(v, int(cap), int(record.get("split_seed", 0))) for k, v in splits.items()}
    return splits


def _stratified_subset(ds: ImageDataset, cap: int, seed: int) -> ImageDataset:
    """About ``cap`` samples (near-duplicate groups stay whole), seeded and stratified (samples are
    stored class-sorted, so the first ``cap`` would often be a single class)."""
    from medsure.data import split_dataset

    check_int("max_samples", cap, low=1, hint="a number of samples per split")
    if cap >= 0.9 * len(ds):  # too little left over to stratify a remainder: keep everything
        return ds
    return split_dataset(ds, seed=seed, fractions={"keep": cap / len(ds), "rest": 1 - cap / len(ds)})["keep"]
