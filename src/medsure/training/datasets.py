"""Rebuild the datasets of a run from its recorded dataset name, options and split seed."""

from __future__ import annotations

import json
from typing import Any

from medsure.data.base import ImageDataset
from medsure.validation import check_int, input_error


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["task=segmentation", "binary_melanoma=true"]`` → dict (values parsed as JSON if they can be).

    Values are typed by the loader (``medsure.data.registry``): ``value_map={"0":1,"255":0}``
    (JSON keys are strings) or ``value_map=0:1,255:0``, ``class_names=a,b`` or a JSON list,
    ``threshold=127``, ``dedup=true``.
    """
    options: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise input_error("--option", pair, "KEY=VALUE, e.g. task=segmentation")
        key, value = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise input_error("--option", pair, "KEY=VALUE with a non-empty KEY")
        if key in options:
            raise input_error("--option", key, "each KEY once", f"{key} is given twice")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def resolved_root(root: str | None) -> str | None:
    """``--root`` as an absolute path, so the run record works from any working directory."""
    if root is None:
        return None
    from pathlib import Path

    return str(Path(root).expanduser().resolve())


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
        "root": resolved_root(root),
        "image_size": image_size,
        "options": _resolved_options(options),
        "split_seed": int(split_seed),
        "max_samples": max_samples,
    }


def _resolved_options(options: dict[str, Any]) -> dict[str, Any]:
    """A group CSV given relative to the working directory is stored absolute (like ``--root``);
    ``images=``/``masks=`` stay relative: they are relative to the root."""
    from pathlib import Path

    out = dict(options)
    groups = out.get("groups")
    if isinstance(groups, str) and not Path(groups).is_absolute() and Path(groups).exists():
        out["groups"] = str(Path(groups).resolve())
    return out


def load_whole(record: dict[str, Any], image_size: int | None = None) -> ImageDataset:
    """The full dataset described by ``record`` (no split)."""
    from medsure.data import load_dataset

    options = dict(record.get("options", {}))
    # a record written through the Python API may carry the size among the loader options
    option_size = options.pop("image_size", None)
    size = next((s for s in (image_size, record.get("image_size"), option_size) if s is not None), None)
    return load_dataset(record["name"], root=record.get("root"), image_size=size, **options)


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
