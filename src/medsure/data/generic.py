"""Generic loaders for a user's own data: one vocabulary for every layout.

- ``folder``: classification, ``root/<class>/<image>``;
- ``segfolder``: segmentation, ``root/images/<image>`` with ``root/masks/<mask>`` paired by name;
- ``jointfolder``: class folders *and* a mirrored mask tree, ``root/images/<class>/<image>`` with
  ``root/masks/<class>/<mask>`` (class label and lesion mask of the same image);
- ``manifest``: a CSV with the columns ``image`` and any of ``label``, ``mask``, ``group``,
  ``split`` that covers every case.

Every loader takes the same group options (a group CSV or a file-name pattern, and
near-duplicate detection) and records in ``meta["dup_group"]`` the ids that a split keeps
together: the user's groups and near-duplicate images joined into connected components.
A layout that does not fit the task is refused naming what was found; nothing is reinterpreted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medsure.data.base import ImageDataset
from medsure.data.dedup import group_label_conflict, near_duplicate_groups
from medsure.data.readers import (
    _missing,
    image_size_of,
    list_images,
    map_mask_values,
    read_csv_table,
    read_folder_per_class,
    read_images,
    read_mask,
)
from medsure.utils.progress import progress
from medsure.validation import describe, input_error

SPLITS = ("train", "val", "cal", "test")
CLASS_FILES = ("classes.json", "class_names.json")
MANIFEST_COLUMNS = ("image", "label", "mask", "group", "split")
# sub-folder names that mark a segmentation layout (never a class of a classification set)
_MASK_WORDS = ("mask", "masks", "label", "labels", "groundtruth", "ground_truth", "gt", "annotations", "manual")
_IMAGE_WORDS = ("image", "images", "img", "imgs")
MAX_LISTED = 10  # names listed in an error message


# --------------------------------------------------------------------------- options
def as_value_map(value: Any, *, what: str = "value_map") -> dict[int, int] | None:
    """A value map from the command line or Python: ``{"0": 0, "255": 1}`` (JSON keys are
    strings), ``{0: 0, 255: 1}`` or ``"0:0,255:1"`` -> ``{0: 0, 255: 1}``."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise input_error(what, value, f'a JSON object {{"RAW": LABEL, ...}} ({exc})') from None
    if isinstance(value, str):
        try:
            value = dict(item.split(":", 1) for item in value.split(",") if item.strip())
        except ValueError:
            raise input_error(what, value, 'a JSON object {"RAW": LABEL, ...} or RAW:LABEL,RAW:LABEL') from None
    if not isinstance(value, Mapping) or not value:
        raise input_error(what, value, 'a non-empty mapping of raw mask value to label id, e.g. {"0": 0, "255": 1}')
    out: dict[int, int] = {}
    for raw, label in value.items():
        try:
            raw_int, label_int = int(str(raw).strip()), int(str(label).strip())
        except ValueError:
            raise input_error(what, dict(value), "integer raw values and integer label ids") from None
        if label_int < 0:
            raise input_error(what, dict(value), "label ids >= 0")
        out[raw_int] = label_int
    return out


def as_names(value: Any, *, what: str = "class_names") -> tuple[str, ...] | None:
    """Class names from a JSON list, a comma-separated string or a sequence."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise input_error(what, value, f"a JSON list of names ({exc})") from None
    elif isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, Sequence) or not value or any(not str(v).strip() for v in value):
        raise input_error(what, value, 'a non-empty list of names, e.g. ["background", "vessel"] or a,b')
    names = tuple(str(v) for v in value)
    if len(set(names)) != len(names):
        raise input_error(what, list(names), "distinct names")
    return names


def as_bool(value: Any, *, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise input_error(what, value, "true or false")


def as_int(value: Any, *, what: str, low: int | None = None) -> int:
    try:
        number = int(value) if not isinstance(value, bool) and float(value) == int(float(value)) else None
    except (TypeError, ValueError):
        number = None
    if number is None or (low is not None and number < low):
        raise input_error(what, value, "an integer" + (f" >= {low}" if low is not None else ""))
    return number


def _folder(root: Path, value: Any, what: str) -> Path:
    """``value`` as a folder: relative paths are relative to ``root``."""
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else root / path


def _class_file(*folders: Path) -> dict[str, Any]:
    """``classes.json`` beside the data: a list of names in label order, or an object with any of
    ``class_names``, ``value_map``, ``threshold``."""
    for folder in folders:
        for name in CLASS_FILES:
            path = folder / name
            if not path.is_file():
                continue
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise input_error(
                    f"class file {path}", f"invalid JSON ({exc})", "a JSON list or object", raw=True
                ) from None
            if isinstance(content, list):
                return {"class_names": content, "_file": str(path)}
            if isinstance(content, dict):
                unknown = sorted(set(content) - {"class_names", "value_map", "threshold"})
                if unknown:
                    raise input_error(
                        f"class file {path}", f"keys {unknown}", "keys among class_names, value_map, threshold"
                    )
                return {**content, "_file": str(path)}
            raise input_error(f"class file {path}", type(content).__name__, "a JSON list or object", raw=True)
    return {}


# --------------------------------------------------------------------------- groups
def combine_groups(*groupings: np.ndarray | None) -> np.ndarray:
    """Connected components of "shares a group id in any grouping": int64 (N,), numbered by
    first appearance. Samples in one component must stay in one split."""
    present = [np.asarray(g) for g in groupings if g is not None]
    if not present:
        raise input_error("groupings", "none", "at least one grouping", raw=True)
    n = len(present[0])
    rows, cols = [np.arange(n)], [np.arange(n)]
    for groups in present:
        _, index = np.unique(groups.astype(str), return_inverse=True)
        first = np.full(int(index.max()) + 1 if n else 0, -1)
        for i, g in enumerate(index):  # link every member to the first member of its group
            if first[g] < 0:
                first[g] = i
        rows.append(np.arange(n))
        cols.append(first[index])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first_seen = np.unique(labels, return_index=True)
    order = np.argsort(first_seen)
    remap = np.empty(len(order), dtype=np.int64)
    remap[np.unique(labels)[order]] = np.arange(len(order))
    return remap[labels]


def groups_from_pattern(names: Sequence[str], pattern: str) -> np.ndarray:
    """Group id per file name: the first capture group of ``pattern`` (else the whole match),
    searched in the name; e.g. ``"^(P\\d+)_"`` for ``P012_left.png``."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise input_error("group_pattern", pattern, f"a regular expression ({exc})") from None
    out, unmatched = [], []
    for name in names:
        found = regex.search(name)
        if found is None:
            unmatched.append(name)
            continue
        out.append(found.group(1) if regex.groups else found.group(0))
    if unmatched:
        raise input_error(
            "group_pattern",
            f"{pattern!r}, which matches no part of {len(unmatched)} file name(s): {unmatched[:MAX_LISTED]}",
            "a pattern found in every file name",
            raw=True,
        )
    return np.asarray(out, dtype=str)


def groups_from_csv(path: Path, names: Sequence[str], paths: Sequence[Path]) -> np.ndarray:
    """Group id per image from a CSV with columns ``image`` (file name, stem or path) and ``group``."""
    table = read_csv_table(path)
    missing = [c for c in ("image", "group") if c not in table]
    if missing:
        raise input_error(f"group CSV {path}", f"columns {sorted(table)}", "the columns image and group", raw=True)
    lookup: dict[str, str] = {}
    for image, group in zip(table["image"], table["group"], strict=True):
        key = str(image).strip()
        for k in (key, Path(key).name, Path(key).stem):
            lookup.setdefault(k, str(group).strip())
    out, absent = [], []
    for name, file in zip(names, paths, strict=True):
        group = next((lookup[k] for k in (name, file.name, file.stem, str(file)) if k in lookup), None)
        if group is None or group == "":
            absent.append(name)
        out.append(group or "")
    if absent:
        raise input_error(
            f"group CSV {path}",
            f"no group for {len(absent)} image(s): {absent[:MAX_LISTED]}",
            "a row (image, group) for every image",
            raw=True,
        )
    return np.asarray(out, dtype=str)


def _grouped(
    ds: ImageDataset,
    *,
    user_groups: np.ndarray | None,
    group_source: str | None,
    dedup: bool,
    max_distance: int,
) -> ImageDataset:
    """Attach ``meta["group"]`` (the user's ids), ``meta["dup_group"]`` (what splits keep
    together) and say in the provenance where the groups came from."""
    meta = dict(ds.meta)
    near = None
    if dedup:
        near = near_duplicate_groups(ds.images, max_distance=max_distance)
        meta["near_dup_group"] = near
    if user_groups is not None:
        meta["group"] = np.asarray(user_groups, dtype=str)
    if user_groups is not None or near is not None:
        meta["dup_group"] = combine_groups(user_groups, near)
        if ds.task == "classification" and ds.targets is not None:
            meta["label_conflict"] = group_label_conflict(meta["dup_group"], ds.targets)
    groups_record = {
        "source": group_source,
        "n_groups": len(np.unique(meta["dup_group"])) if "dup_group" in meta else len(ds),
        "near_duplicates": {"hash": "dHash 8x8", "max_distance": max_distance} if dedup else None,
    }
    return replace(ds, meta=meta, provenance={**ds.provenance, "groups": groups_record})


def _group_options(opts: dict[str, Any], root: Path) -> tuple[str | None, Path | None, bool, int]:
    pattern = opts.get("group_pattern")
    group_csv = opts.get("groups")
    if pattern is not None and group_csv is not None:
        raise input_error("groups and group_pattern", "both", "one source of group ids", raw=True)
    csv_path = None
    if group_csv is not None:
        csv_path = Path(str(group_csv)).expanduser()
        if not csv_path.is_absolute() and not csv_path.exists():
            csv_path = root / csv_path
        if not csv_path.is_file():
            raise _missing("groups CSV", csv_path)
    dedup = as_bool(opts.get("dedup", False), what="dedup")
    max_distance = as_int(opts.get("max_distance", 6), what="max_distance", low=0)
    return (None if pattern is None else str(pattern)), csv_path, dedup, max_distance


def _user_groups(
    pattern: str | None, csv_path: Path | None, names: Sequence[str], paths: Sequence[Path]
) -> tuple[np.ndarray | None, str | None]:
    if pattern is not None:
        return groups_from_pattern([p.name for p in paths], pattern), f"file-name pattern {pattern!r}"
    if csv_path is not None:
        return groups_from_csv(csv_path, names, paths), f"group CSV {csv_path}"
    return None, None


# --------------------------------------------------------------------------- reading helpers
def _read(paths: Sequence[Path], mode: str, image_size: int, desc: str) -> np.ndarray:
    """Images as uint8 (N, S, S, C); ``mode="auto"`` keeps one channel when every image is grey."""
    if mode == "auto":
        images = read_images(paths, mode="RGB", image_size=image_size, desc=desc)
        if images.size and np.all(images[..., :1] == images):
            return np.ascontiguousarray(images[..., :1])
        return images
    if mode not in ("L", "RGB"):
        raise input_error("mode", mode, "'auto', 'L' (grey) or 'RGB'")
    return read_images(paths, mode=mode, image_size=image_size, desc=desc)


def _pair_key(name: str, pattern: re.Pattern | None, suffix: str | None) -> str | None:
    """The key an image or mask file is paired by: a pattern's first group (or match), else the
    file stem without ``suffix``."""
    if pattern is not None:
        found = pattern.search(name)
        if found is None:
            return None
        return found.group(1) if pattern.groups else found.group(0)
    stem = Path(name).stem
    if suffix:
        suffix_stem = Path(suffix).stem if Path(suffix).suffix.lower() in _SUFFIXES else suffix
        if not stem.endswith(suffix_stem):
            return None
        stem = stem[: len(stem) - len(suffix_stem)]
    return stem


_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


def _compile(pattern: Any, what: str) -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        return re.compile(str(pattern))
    except re.error as exc:
        raise input_error(what, pattern, f"a regular expression ({exc})") from None


def pair_masks(
    image_paths: Sequence[Path],
    mask_dir: Path,
    *,
    mask_suffix: str | None = None,
    image_pattern: str | None = None,
    mask_pattern: str | None = None,
) -> list[Path]:
    """The mask of each image, paired by a key: the file stem (masks: the stem without
    ``mask_suffix``, any image extension), or the first group of ``image_pattern`` /
    ``mask_pattern``. Images without a mask raise, naming the first ten."""
    img_re, mask_re = _compile(image_pattern, "image_pattern"), _compile(mask_pattern, "mask_pattern")
    masks = list_images(mask_dir)
    by_key: dict[str, list[Path]] = {}
    for m in masks:
        key = _pair_key(m.name, mask_re, None if mask_re else mask_suffix)
        if key is not None:
            by_key.setdefault(key, []).append(m)
    out, missing = [], []
    for p in image_paths:
        key = _pair_key(p.name, img_re, None)
        found = by_key.get(key, []) if key is not None else []
        if len(found) > 1:
            raise input_error(
                f"mask folder {mask_dir}",
                f"{len(found)} masks for image {p.name}: {[f.name for f in found]}",
                "one mask per image",
                "remove the extra masks or pass mask_suffix= / mask_pattern=",
                raw=True,
            )
        if not found:
            missing.append(p.name)
        else:
            out.append(found[0])
    if missing:
        how = f"mask_suffix={mask_suffix!r}" if mask_suffix else "the same name"
        raise input_error(
            f"mask folder {mask_dir}",
            f"no mask for {len(missing)} of {len(image_paths)} images: {missing[:MAX_LISTED]}",
            f"one mask per image, paired by {how if not mask_re else 'mask_pattern'}",
            "pass mask_suffix= (e.g. _mask) or image_pattern=/mask_pattern= to pair differently",
            raw=True,
        )
    return out


def _check_sizes(image_paths: Sequence[Path], mask_paths: Sequence[Path]) -> None:
    """A mask must have its image's size (before any resizing)."""
    for image, mask in zip(image_paths, mask_paths, strict=True):
        a, b = image_size_of(image), image_size_of(mask)
        if a != b:
            raise input_error(
                f"mask file {mask}",
                f"size {b[1]}x{b[0]}",
                f"the size of its image {image.name} ({a[1]}x{a[0]}, width x height)",
                raw=True,
            )


def read_masks(
    mask_paths: Sequence[Path],
    *,
    image_size: int,
    value_map: Mapping[int, int] | None,
    threshold: int | None,
    n_names: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Label maps int64 (N, S, S) and how the raw values were mapped.

    ``threshold``: binary, raw value > threshold. ``value_map``: exact raw value -> label, unknown
    values raise naming the file. Neither: masks whose values are all below ``n_names`` (more than two
    class names given) are label ids; else masks with two raw values are binary (the higher value
    is foreground), masks whose values are 0..K-1 are label ids; anything else raises listing
    the values found.
    """
    raw = np.stack([read_mask(p, image_size=image_size) for p in progress(mask_paths, desc="reading masks")])
    if threshold is not None:
        return (raw > threshold).astype(np.int64), {"threshold": int(threshold)}
    if value_map is not None:
        mapped = [map_mask_values(m, value_map, name=f"mask file {p}") for m, p in zip(raw, mask_paths, strict=True)]
        return np.stack(mapped).astype(np.int64), {"value_map": {str(k): v for k, v in value_map.items()}}
    values = np.unique(raw)
    if n_names > 2 and values.size and values.min() >= 0 and values.max() < n_names:
        return raw, {"value_map": {str(int(v)): int(v) for v in values}}
    if len(values) <= 2:
        top = int(values.max()) if values.size else 0
        return (raw == top).astype(np.int64) if top > 0 else np.zeros_like(raw), {
            "value_map": {**{str(int(v)): 0 for v in values if v != top}, str(top): 1} if top > 0 else {"0": 0}
        }
    if np.array_equal(values, np.arange(len(values))):
        return raw, {"value_map": {str(int(v)): int(v) for v in values}}
    raise input_error(
        "masks",
        f"{len(values)} different values {values[:MAX_LISTED].tolist()}{'...' if len(values) > MAX_LISTED else ''}",
        "two values (binary), label ids 0..K-1, or a value_map / threshold option",
        "pass threshold=127 for JPEG-compressed binary masks, or value_map=RAW:LABEL,... for label masks",
        raw=True,
    )


def _default_names(n_labels: int) -> tuple[str, ...]:
    return (
        ("background", "foreground") if n_labels <= 2 else ("background", *(f"label {j}" for j in range(1, n_labels)))
    )


def _class_names_for_masks(given: tuple[str, ...] | None, masks: np.ndarray, file_names: Any) -> tuple[str, ...]:
    n_labels = int(masks.max()) + 1 if masks.size else 1
    names = given or file_names or _default_names(max(2, n_labels))
    names = tuple(str(n) for n in names)
    if len(names) < n_labels:
        raise input_error(
            "class_names",
            list(names),
            f"at least {n_labels} names, one per label id 0..{n_labels - 1} found in the masks",
        )
    return names


# --------------------------------------------------------------------------- folder (classification)
def check_classification_layout(root: Path) -> None:
    """Refuse a folder laid out for segmentation (``images/`` + ``masks/``) or holding mask files
    among the images: training a classifier to tell those folders apart is a silent error."""
    if not root.is_dir():
        raise _missing("dataset folder", root, folder=True)
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    lower = {s.lower(): s for s in subdirs}
    mask_dirs = [lower[w] for w in lower if any(w == m or w.endswith("_" + m) for m in _MASK_WORDS)]
    image_dirs = [lower[w] for w in lower if w in _IMAGE_WORDS]
    if mask_dirs:
        found = ", ".join(f"{d}/" for d in image_dirs + mask_dirs)
        raise input_error(
            f"dataset folder {root}",
            f"sub-folders {found} (a segmentation layout, not one folder per class)",
            "root/<class>/<image> for --dataset folder",
            "use --dataset segfolder for images/ + masks/, or --dataset jointfolder for class folders with masks",
            raw=True,
        )
    for sub in subdirs:
        files = list_images(root / sub)
        masks = [p.name for p in files if re.search(r"(^|[_\- ])masks?([_\- ]|\d|$)", p.stem.lower())]
        if masks:
            raise input_error(
                f"class folder {root / sub}",
                f"{len(masks)} mask file(s) among its images, e.g. {masks[:3]}",
                "images only, one folder per class",
                "move the masks to a mirrored folder and use --dataset jointfolder (option masks=, mask_suffix=)",
                raw=True,
            )


def load_folder(root: Path, image_size: int, opts: dict[str, Any]) -> ImageDataset:
    """``root/<class>/<image>``; see :func:`medsure.data.load_dataset`."""
    check_classification_layout(root)
    names = as_names(opts.get("class_names"))
    if names is None:
        names = as_names(_class_file(root).get("class_names"))
    ds = read_folder_per_class(root, class_names=names, mode=str(opts.get("mode", "RGB")), image_size=image_size)
    paths = [Path(p) for p in ds.meta["path"]]
    pattern, csv_path, dedup, max_distance = _group_options(opts, root)
    groups, source = _user_groups(pattern, csv_path, list(ds.ids), paths)
    ds = replace(ds, provenance={**ds.provenance, "dataset": "folder", "source": str(root)})
    return _grouped(ds, user_groups=groups, group_source=source, dedup=dedup, max_distance=max_distance)


# --------------------------------------------------------------------------- segfolder
def load_segfolder(root: Path, image_size: int, opts: dict[str, Any]) -> ImageDataset:
    """``root/images/<image>`` + ``root/masks/<mask>``; see :func:`medsure.data.load_dataset`."""
    if not root.is_dir():
        raise _missing("dataset folder", root, folder=True)
    image_dir = _folder(root, opts.get("images", "images"), "images")
    mask_dir = _folder(root, opts.get("masks", "masks"), "masks")
    for what, folder in (("images", image_dir), ("masks", mask_dir)):
        if not folder.is_dir():
            found = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())
            raise input_error(
                f"segfolder {what} folder",
                f"{folder}, which does not exist (sub-folders of {root}: {found or 'none'})",
                f"a folder of {what}",
                f"pass {what}=<folder name> if yours is called differently",
                raw=True,
            )
    image_paths = list_images(image_dir)
    if not image_paths:
        raise input_error(f"image folder {image_dir}", "no images", "at least one image", raw=True)
    mask_paths = pair_masks(
        image_paths,
        mask_dir,
        mask_suffix=opts.get("mask_suffix"),
        image_pattern=opts.get("image_pattern"),
        mask_pattern=opts.get("mask_pattern"),
    )
    _check_sizes(image_paths, mask_paths)
    file_opts = _class_file(root, mask_dir)
    value_map = as_value_map(opts.get("value_map", file_opts.get("value_map")))
    threshold = opts.get("threshold", file_opts.get("threshold"))
    if value_map is not None and threshold is not None:
        raise input_error("value_map and threshold", "both", "at most one of them", raw=True)
    threshold = None if threshold is None else as_int(threshold, what="threshold", low=0)
    images = _read(image_paths, str(opts.get("mode", "auto")), image_size, f"reading {image_dir.name}")
    given = as_names(opts.get("class_names")) or as_names(file_opts.get("class_names"))
    masks, mapping = read_masks(
        mask_paths, image_size=image_size, value_map=value_map, threshold=threshold, n_names=len(given or ())
    )
    names = _class_names_for_masks(given, masks, None)
    ds = ImageDataset(
        images=images,
        targets=masks,
        ids=np.asarray([p.name for p in image_paths]),
        class_names=np.asarray(names),
        task="segmentation",
        meta={"path": np.asarray([str(p) for p in image_paths]), "mask_path": np.asarray([str(p) for p in mask_paths])},
        provenance={
            "dataset": "segfolder",
            "source": str(root),
            "masks": mapping,
            "class_file": file_opts.get("_file"),
        },
    )
    pattern, csv_path, dedup, max_distance = _group_options(opts, root)
    groups, source = _user_groups(pattern, csv_path, list(ds.ids), image_paths)
    return _grouped(ds, user_groups=groups, group_source=source, dedup=dedup, max_distance=max_distance)


# --------------------------------------------------------------------------- jointfolder
def load_jointfolder(root: Path, image_size: int, opts: dict[str, Any]) -> ImageDataset:
    """Class folders with a mirrored mask tree: ``images/<class>/<image>``, ``masks/<class>/<mask>``.

    Returns a segmentation :class:`ImageDataset` (targets: masks) whose ``meta["label"]`` holds
    the class index of each image and ``provenance["image_class_names"]`` the class names; with
    ``task="classification"`` a classification dataset (targets: the class labels).
    """
    if not root.is_dir():
        raise _missing("dataset folder", root, folder=True)
    image_root = _folder(root, opts.get("images", "images"), "images")
    mask_root = _folder(root, opts.get("masks", "masks"), "masks")
    for what, folder in (("images", image_root), ("masks", mask_root)):
        if not folder.is_dir():
            raise input_error(
                f"jointfolder {what} folder",
                f"{folder}, which does not exist",
                f"a folder with one sub-folder of {what} per class",
                f"pass {what}=<folder> (relative to --root)",
                raw=True,
            )
    file_opts = _class_file(root, image_root)
    classes = as_names(opts.get("classes")) or as_names(file_opts.get("classes"))
    if classes is None:
        classes = tuple(sorted(p.name for p in image_root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise input_error(
            f"jointfolder images folder {image_root}", "no class sub-folders", "images/<class>/<image>", raw=True
        )
    image_paths: list[Path] = []
    mask_paths: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        files = list_images(image_root / cls)
        if not files:
            raise input_error(f"class folder {image_root / cls}", "no images", "at least one image per class", raw=True)
        if not (mask_root / cls).is_dir():
            raise _missing(f"mask folder of class {cls!r}", mask_root / cls, folder=True)
        image_paths += files
        mask_paths += pair_masks(
            files,
            mask_root / cls,
            mask_suffix=opts.get("mask_suffix"),
            image_pattern=opts.get("image_pattern"),
            mask_pattern=opts.get("mask_pattern"),
        )
        labels += [label] * len(files)
    _check_sizes(image_paths, mask_paths)
    value_map = as_value_map(opts.get("value_map", file_opts.get("value_map")))
    threshold = opts.get("threshold", file_opts.get("threshold"))
    threshold = None if threshold is None else as_int(threshold, what="threshold", low=0)
    images = _read(image_paths, str(opts.get("mode", "auto")), image_size, f"reading {image_root.name}")
    given = as_names(opts.get("class_names")) or as_names(file_opts.get("class_names"))
    masks, mapping = read_masks(
        mask_paths, image_size=image_size, value_map=value_map, threshold=threshold, n_names=len(given or ())
    )
    mask_names = _class_names_for_masks(given, masks, None)
    label_array = np.asarray(labels, dtype=np.int64)
    ids = np.asarray([f"{p.parent.name}/{p.name}" for p in image_paths])
    meta = {
        "label": label_array,
        "label_name": np.asarray(classes)[label_array],
        "path": np.asarray([str(p) for p in image_paths]),
        "mask_path": np.asarray([str(p) for p in mask_paths]),
    }
    provenance = {
        "dataset": "jointfolder",
        "source": str(root),
        "masks": mapping,
        "image_class_names": list(classes),
        "mask_class_names": list(mask_names),
    }
    task = str(opts.get("task", "segmentation"))
    if task == "segmentation":
        ds = ImageDataset(images, masks, ids, np.asarray(mask_names), "segmentation", meta, provenance)
    elif task == "classification":
        ds = ImageDataset(images, label_array, ids, np.asarray(classes), "classification", meta, provenance)
    else:
        raise input_error("jointfolder task", task, "'segmentation' (masks, class in meta 'label') or 'classification'")
    pattern, csv_path, dedup, max_distance = _group_options(opts, root)
    groups, source = _user_groups(pattern, csv_path, list(ids), image_paths)
    return _grouped(ds, user_groups=groups, group_source=source, dedup=dedup, max_distance=max_distance)


# --------------------------------------------------------------------------- manifest
def load_manifest(csv_path: Path, image_size: int, opts: dict[str, Any]) -> ImageDataset:
    """A CSV with ``image`` and any of ``label``, ``mask``, ``group``, ``split`` (paths relative to
    the CSV's folder); see :func:`medsure.data.load_dataset`."""
    if csv_path.is_dir():
        raise input_error(
            "--root for --dataset manifest",
            f"{csv_path}, a folder",
            "a CSV file (image,label,mask,group,split)",
            raw=True,
        )
    table = read_csv_table(csv_path)
    columns = sorted(table)
    if "image" not in table or ("label" not in table and "mask" not in table):
        raise input_error(
            f"manifest {csv_path}",
            f"columns {columns}",
            "a column image and at least one of label (classification) or mask (segmentation); optional: group, split",
            raw=True,
        )
    n = len(table["image"])
    if n == 0:
        raise input_error(f"manifest {csv_path}", "no rows", "one row per image", raw=True)
    base = csv_path.parent
    given_task = opts.get("task") or ("segmentation" if "mask" in table else "classification")
    if given_task not in ("classification", "segmentation"):
        raise input_error("manifest task", given_task, "'classification' or 'segmentation'")
    task: Literal["classification", "segmentation"] = (
        "segmentation" if given_task == "segmentation" else "classification"
    )
    needed = "mask" if task == "segmentation" else "label"
    if needed not in table:
        raise input_error(f"manifest {csv_path}", f"columns {columns}", f"a column {needed} for task={task}", raw=True)
    empty = [i + 2 for i, v in enumerate(table[needed]) if not str(v).strip()]
    if empty:
        raise input_error(
            f"manifest {csv_path} column {needed!r}",
            f"empty cells on lines {empty[:MAX_LISTED]}",
            f"a {needed} on every row",
            raw=True,
        )
    image_paths = [_folder(base, v.strip(), "image") for v in table["image"]]
    absent = [str(p) for p in image_paths if not p.is_file()]
    if absent:
        raise input_error(
            f"manifest {csv_path} column 'image'",
            f"{len(absent)} missing file(s): {absent[:MAX_LISTED]}",
            "existing image files (paths relative to the CSV's folder)",
            raw=True,
        )
    ids = np.asarray([v.strip() for v in table["image"]])
    if len(set(ids.tolist())) != n:
        dup = sorted({i for i in ids.tolist() if (ids == i).sum() > 1})
        raise input_error(
            f"manifest {csv_path} column 'image'", f"repeated rows {dup[:MAX_LISTED]}", "each image once", raw=True
        )
    meta: dict[str, np.ndarray] = {"path": np.asarray([str(p) for p in image_paths])}
    if "split" in table:
        split = np.char.lower(np.char.strip(table["split"].astype(str)))
        unknown = sorted(set(split.tolist()) - set(SPLITS) - {""})
        if unknown:
            raise input_error(
                f"manifest {csv_path} column 'split'",
                f"values {unknown[:MAX_LISTED]}",
                "train, val, cal, test or empty (empty rows are shared out by medsure)",
                raw=True,
            )
        meta["manifest_split"] = split
    images = _read(image_paths, str(opts.get("mode", "auto")), image_size, f"reading {csv_path.name}")
    provenance: dict[str, Any] = {"dataset": "manifest", "source": str(csv_path)}
    file_opts = _class_file(base)
    if task == "segmentation":
        mask_paths = [_folder(base, v.strip(), "mask") for v in table["mask"]]
        absent = [str(p) for p in mask_paths if not p.is_file()]
        if absent:
            raise input_error(
                f"manifest {csv_path} column 'mask'",
                f"{len(absent)} missing file(s): {absent[:MAX_LISTED]}",
                "existing mask files (paths relative to the CSV's folder)",
                raw=True,
            )
        _check_sizes(image_paths, mask_paths)
        value_map = as_value_map(opts.get("value_map", file_opts.get("value_map")))
        threshold = opts.get("threshold", file_opts.get("threshold"))
        threshold = None if threshold is None else as_int(threshold, what="threshold", low=0)
        given = as_names(opts.get("class_names")) or as_names(file_opts.get("class_names"))
        targets, mapping = read_masks(
            mask_paths, image_size=image_size, value_map=value_map, threshold=threshold, n_names=len(given or ())
        )
        names = _class_names_for_masks(given, targets, None)
        provenance["masks"] = mapping
        meta["mask_path"] = np.asarray([str(p) for p in mask_paths])
        if "label" in table:
            meta["label_name"] = np.char.strip(table["label"].astype(str))
    else:
        targets, names = _labels(
            table["label"], as_names(opts.get("class_names")) or as_names(file_opts.get("class_names")), csv_path
        )
    ds = ImageDataset(images, targets, ids, np.asarray(names), task, meta, provenance)
    _, _, dedup, max_distance = _group_options(
        {k: v for k, v in opts.items() if k not in ("groups", "group_pattern")}, base
    )
    groups, source = None, None
    if "group" in table:
        groups = np.char.strip(table["group"].astype(str))
        blank = [str(i) for i, g in zip(ids, groups, strict=True) if not g]
        if blank:
            raise input_error(
                f"manifest {csv_path} column 'group'",
                f"empty cells for {blank[:MAX_LISTED]}",
                "a group on every row",
                raw=True,
            )
        source = f"manifest column 'group' ({csv_path.name})"
    elif opts.get("group_pattern") is not None:
        groups = groups_from_pattern([p.name for p in image_paths], str(opts["group_pattern"]))
        source = f"file-name pattern {opts['group_pattern']!r}"
    ds = _grouped(ds, user_groups=groups, group_source=source, dedup=dedup, max_distance=max_distance)
    if "manifest_split" in meta and "dup_group" in ds.meta:
        split = inherit_group_splits(ds.meta["dup_group"], meta["manifest_split"])
        check_groups_within_splits(ds.meta["dup_group"], split, ids, where=f"manifest {csv_path}")
        ds = replace(ds, meta={**ds.meta, "manifest_split": split})
    return ds


def inherit_group_splits(groups: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """Rows without a split take the split of their group's other rows, when those agree."""
    groups, out = np.asarray(groups), np.asarray(splits).astype(str).copy()
    for g in np.unique(groups[out == ""]):
        members = groups == g
        named = np.unique(out[members & (out != "")])
        if len(named) == 1:
            out[members & (out == "")] = named[0]
    return out


def _labels(column: np.ndarray, names: tuple[str, ...] | None, csv_path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices from a label column of names or of integer indices."""
    values = [str(v).strip() for v in column]
    if names is not None and all(v in names for v in values):
        return np.asarray([names.index(v) for v in values], dtype=np.int64), names
    if all(re.fullmatch(r"-?\d+(\.0+)?", v) for v in values):
        ints = np.asarray([int(float(v)) for v in values], dtype=np.int64)
        k = len(names) if names is not None else int(ints.max()) + 1
        if ints.min() < 0 or ints.max() >= k:
            raise input_error(
                f"manifest {csv_path} column 'label'",
                f"labels {sorted(set(ints.tolist()))[:MAX_LISTED]}",
                f"class indices in [0, {k - 1}]" + (f" for class_names {list(names)}" if names else ""),
                raw=True,
            )
        return ints, names or tuple(f"class {j}" for j in range(k))
    if names is not None:
        unknown = sorted(set(values) - set(names))
        raise input_error(
            f"manifest {csv_path} column 'label'",
            f"labels {unknown[:MAX_LISTED]}",
            f"one of class_names {list(names)}",
            raw=True,
        )
    found = tuple(sorted(set(values)))
    return np.asarray([found.index(v) for v in values], dtype=np.int64), found


def check_groups_within_splits(groups: np.ndarray, splits: np.ndarray, ids: np.ndarray, *, where: str) -> None:
    """Raise when a group (or near-duplicate component) has members in two given splits."""
    groups, splits = np.asarray(groups), np.asarray(splits).astype(str)
    given = splits != ""
    straddling = []
    for g in np.unique(groups[given]):
        members = given & (groups == g)
        if len(np.unique(splits[members])) > 1:
            straddling.append(g)
    if straddling:
        g = straddling[0]
        members = np.flatnonzero(groups == g)
        examples = [f"{ids[i]} ({splits[i] or 'unassigned'})" for i in members[:4]]
        raise input_error(
            f"{where} split column",
            f"{len(straddling)} group(s) spread over two splits, e.g. {describe(examples)}",
            "every group (patient, or near-duplicate images) within one split",
            "put a group's rows in one split or leave their split empty (with dedup=true near-duplicate "
            "images form one group: move them, or drop dedup to keep your splits unchecked)",
            raw=True,
        )


# --------------------------------------------------------------------------- unlabelled images
def list_unlabelled(source: Path) -> tuple[list[Path], np.ndarray]:
    """Image files of a folder (searched recursively; ids are paths relative to it) or of a
    CSV's ``image`` column (paths relative to the CSV's folder)."""
    if source.is_dir():
        paths = sorted(
            p
            for p in source.rglob("*")
            if p.is_file() and p.suffix.lower() in _SUFFIXES and not any(part.startswith(".") for part in p.parts)
        )
        if not paths:
            raise input_error(
                "--images", f"{source}, a folder without images", "a folder of PNG/JPEG/TIFF/GIF/BMP images", raw=True
            )
        return paths, np.asarray([p.relative_to(source).as_posix() for p in paths])
    if source.is_file() and source.suffix.lower() == ".csv":
        table = read_csv_table(source)
        if "image" not in table:
            raise input_error(f"--images {source}", f"columns {sorted(table)}", "a column image", raw=True)
        paths = [_folder(source.parent, v.strip(), "image") for v in table["image"]]
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise input_error(
                f"--images {source} column 'image'",
                f"{len(absent)} missing file(s): {absent[:MAX_LISTED]}",
                "existing image files (paths relative to the CSV's folder)",
                raw=True,
            )
        return paths, np.asarray([v.strip() for v in table["image"]])
    if not source.exists():
        raise _missing("--images", source, folder=True)
    raise input_error("--images", str(source), "a folder of images or a CSV file with a column image")


def read_unlabelled(
    source: Path, *, class_names: Sequence[str], task: str, channels: int, image_size: int
) -> ImageDataset:
    """New images without labels, read the way a run's model expects them (its channels, size)."""
    paths, ids = list_unlabelled(source)
    if len(set(ids.tolist())) != len(ids):
        raise input_error("--images", f"repeated images in {source}", "each image once", raw=True)
    images = read_images(paths, mode="L" if channels == 1 else "RGB", image_size=image_size, desc="reading images")
    return ImageDataset(
        images=images,
        targets=None,
        ids=ids,
        class_names=np.asarray(class_names),
        task="segmentation" if task == "segmentation" else "classification",
        meta={"path": np.asarray([str(p) for p in paths])},
        provenance={"dataset": "unlabelled images", "source": str(source), "n": len(paths)},
    )
