"""``load_dataset``: every dataset medsure knows by name.

Embedded copies (inside the package, redistributable: PneumoniaMNIST, BreastMNIST, BUSI at
64x64, MSD lung patches) load with no arguments. The other sets are read from a data root:
``root=`` argument, else env ``MEDSURE_DATA_ROOT``, else ``../shared/data`` from the working
directory; a missing folder raises :class:`DataUnavailableError` naming the path expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medsure.data.base import ImageDataset
from medsure.data.dedup import (
    exact_duplicate_groups,
    group_label_conflict,
    near_duplicate_groups,
)
from medsure.data.joint import JOINT_LOADERS
from medsure.data.medmnist import (
    FLAGS,
    fetch_medmnist,
    get_flag,
    load_medmnist_npz,
    md5sum,
)
from medsure.data.readers import (
    read_csv_labelled,
    read_csv_table,
    read_folder_per_class,
    read_hdf5_patches,
    read_image_mask_pairs,
)
from medsure.data.transforms import resize_images, resize_masks
from medsure.errors import DataUnavailableError
from medsure.validation import input_error

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
DEFAULT_IMAGE_SIZE = 64
# BUSI near-duplicates: dHash 8x8, linked when <= 6 of 64 bits differ (valley of the BUSI
# nearest-neighbour distance histogram; 780 images -> 613 groups)
BUSI_HASH_SIZE = 8
BUSI_MAX_DISTANCE = 6
BUSI_CLASSES = ("benign", "malignant", "normal")
BUSI_READ_SIZE = 256  # size of the shared BUSI copy; the original release varies per image
MELANOMA_CLASSES = ("non-melanoma", "melanoma")
JSRT_VALUE_MAP = {0: 0, 150: 1, 200: 2, 250: 3}
JSRT_CLASSES = ("background", "right lung", "left lung", "heart")


def default_data_root() -> Path:
    """env ``MEDSURE_DATA_ROOT``, else ``../shared/data`` relative to the working directory."""
    env = os.environ.get("MEDSURE_DATA_ROOT")
    return Path(env) if env else Path.cwd().parent / "shared" / "data"


def _find_dir(name: str, root: str | os.PathLike | None, subdirs: tuple[str, ...], marker: str) -> Path:
    """First of ``root/<subdir>`` (or root itself) that contains ``marker``."""
    base = Path(root) if root is not None else default_data_root()
    candidates = [base / s for s in subdirs] + [base]
    for folder in candidates:
        if (folder / marker).exists():
            return folder
    raise input_error(
        f"{name} data",
        f"no {marker} under {', '.join(map(str, candidates))}",
        f"{candidates[0] / marker}",
        f"set root=, or env MEDSURE_DATA_ROOT to the folder holding {subdirs[0]}/",
        raw=True,
        kind=DataUnavailableError,
    )


def embedded_manifest() -> dict[str, Any]:
    """Contents of ``embedded/manifest.json``: per embedded set its file, MD5, licence, counts."""
    path = EMBEDDED_DIR / "manifest.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def _embedded_file(name: str, verify: bool = True) -> tuple[Path, dict[str, Any]]:
    entry = embedded_manifest().get(name)
    if entry is None:
        raise input_error(
            f"embedded copy of {name}",
            f"no entry in {EMBEDDED_DIR}'s manifest",
            "an embedded file",
            "rebuild with scripts/build_embedded.py",
            raw=True,
            kind=DataUnavailableError,
        )
    path = EMBEDDED_DIR / entry["file"]
    if not path.is_file():
        raise input_error(
            "embedded file",
            f"{path}, which does not exist",
            "the file listed in the manifest",
            "rebuild with scripts/build_embedded.py",
            raw=True,
            kind=DataUnavailableError,
        )
    found = md5sum(path)
    if verify and found != entry["md5"]:
        raise input_error(f"embedded file {path}", f"MD5 {found}", f"MD5 {entry['md5']}", "reinstall medsure", raw=True)
    provenance = {
        "source": "embedded",
        "dataset": name,
        "file": str(path),
        "md5": found,
        "expected_md5": entry["md5"],
        "verified": found == entry["md5"],
        # the embedded file is a re-save: its MD5 is medsure's manifest's, not the source's
        "verified_against": "medsure embedded manifest",
        "license": entry.get("license"),
        "citation": entry.get("citation"),
        "note": entry.get("note", ""),
    }
    return path, provenance


def _options(name: str, options: dict[str, Any], allowed: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise input_error(
            f"load_dataset({name!r}) options",
            f"unknown option(s) {unknown}",
            "options among " + ", ".join(sorted(allowed)),
            raw=True,
        )
    return {**allowed, **_typed_options(options)}


def _typed_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options as the loaders use them, whether they came from Python or from ``--option
    KEY=VALUE`` (JSON object keys are strings; lists may be written a,b)."""
    from medsure.data.generic import as_bool, as_int, as_names, as_value_map

    out = dict(options)
    for key, value in options.items():
        if value is None:
            continue
        if key == "value_map":
            out[key] = as_value_map(value)
        elif key in ("class_names", "classes"):
            out[key] = as_names(value, what=key)
        elif key in ("threshold", "max_distance"):
            out[key] = as_int(value, what=key, low=0)
        elif key in ("dedup", "download", "verify", "binary_melanoma"):
            out[key] = as_bool(value, what=key)
    return out


def _resize_dataset(
    ds: ImageDataset, image_size: int | None, *, max_size: int | None = None, hint: str = ""
) -> ImageDataset:
    if image_size is None or ds.image_size == (image_size, image_size):
        return ds
    if max_size is not None and image_size > max_size:
        raise input_error(
            "image_size",
            image_size,
            f"at most {max_size} (this copy is {max_size}x{max_size} and is not upsampled)",
            hint,
        )
    targets = ds.targets
    if ds.task == "segmentation" and targets is not None:
        targets = resize_masks(targets, image_size)
    provenance = {**ds.provenance, "resized_to": [image_size, image_size]}
    return replace(ds, images=resize_images(ds.images, image_size), targets=targets, provenance=provenance)


def _check_image_size(image_size: int | None) -> None:
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 8):
        raise input_error("image_size", image_size, "an int >= 8")


# --------------------------------------------------------------------------- MedMNIST
def _load_medmnist(name: str, root, image_size, **options) -> ImageDataset:
    opts = _options(name, options, {"download": False, "verify": True})
    info = get_flag(name)
    size = 28 if image_size is None else int(image_size)
    if root is None and size == 28 and name in embedded_manifest() and not opts["download"]:
        path, provenance = _embedded_file(name)
        return load_medmnist_npz(path, class_names=info.labels, provenance=provenance)
    if root is None and not opts["download"]:
        embedded = " (only 28x28 is embedded)" if name in embedded_manifest() else ""
        raise input_error(
            f"{name} image size",
            f"{size}x{size}, which is not embedded{embedded}",
            "an embedded size, download=True or root=",
            "pass download=True to fetch the official file, or root= the folder holding "
            f"{info.filename(size) if size in (28, 64, 128, 224) else '...'}",
            raw=True,
            kind=DataUnavailableError,
        )
    folder = None
    if root is not None:
        filename = info.filename(size)
        folder = next((f for f in (Path(root) / "medmnist", Path(root)) if (f / filename).is_file()), Path(root))
    path, provenance = fetch_medmnist(name, size, root=folder, download=opts["download"], verify=opts["verify"])
    return load_medmnist_npz(path, class_names=info.labels, provenance=provenance)


# --------------------------------------------------------------------------- BUSI
def _load_busi(name: str, root, image_size, **options) -> ImageDataset:
    opts = _options(name, options, {"dedup": True})
    if root is None:
        path, provenance = _embedded_file("busi")
        with np.load(path, allow_pickle=False) as npz:
            labels, groups = npz["labels"].astype(np.int64), npz["dup_group"].astype(np.int64)
            ds = ImageDataset(
                images=npz["images"][..., None],
                targets=labels,
                ids=npz["ids"],
                class_names=npz["class_names"],
                task="classification",
                meta={"dup_group": groups, "label_conflict": group_label_conflict(groups, labels)},
                provenance=provenance,
            )
        return _resize_dataset(
            ds, image_size, max_size=ds.image_size[0], hint="pass root=<BUSI folder with benign/, malignant/, normal/>"
        )
    folder = _find_dir(name, root, ("busi",), "benign")
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    # the original release mixes image sizes; reading at the shared copy's 256x256 makes them
    # stackable and keeps the near-duplicate hashes (and so the groups) identical for both
    full = read_folder_per_class(
        folder, class_names=BUSI_CLASSES, mode="L", image_size=BUSI_READ_SIZE, exclude=lambda n: "_mask" in n
    )
    meta = dict(full.meta)
    if opts["dedup"]:
        meta["dup_group"] = near_duplicate_groups(full.images, hash_size=BUSI_HASH_SIZE, max_distance=BUSI_MAX_DISTANCE)
        meta["label_conflict"] = group_label_conflict(meta["dup_group"], full.require_targets("BUSI images"))
    provenance = {
        "source": str(folder),
        "dataset": "busi",
        "dedup": {"hash": f"dHash {BUSI_HASH_SIZE}x{BUSI_HASH_SIZE}", "max_distance": BUSI_MAX_DISTANCE}
        if opts["dedup"]
        else None,
    }
    ds = replace(full, meta=meta, provenance=provenance)
    return _resize_dataset(ds, size)


# --------------------------------------------------------------------------- ISIC 2017
def _load_isic2017(name: str, root, image_size, **options) -> ImageDataset:
    opts = _options(name, options, {"subset": "labelled"})
    folder = _find_dir(name, root, ("isic2017",), "ISIC-2017_Training_Classes.csv")
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    if opts["subset"] == "test":
        from medsure.data.readers import list_images, read_images

        paths = list_images(folder / "ISIC-2017_Test_v2_Data", exclude=lambda n: "superpixels" in n)
        return ImageDataset(
            images=read_images(paths, mode="RGB", image_size=size, desc="reading ISIC test"),
            targets=None,
            ids=np.asarray([p.stem for p in paths]),
            class_names=np.asarray(MELANOMA_CLASSES),
            task="classification",
            meta={"source_split": np.full(len(paths), "test")},
            provenance={"source": str(folder), "dataset": "isic2017", "subset": "test"},
        )
    if opts["subset"] != "labelled":
        raise input_error(
            "isic2017 subset", opts["subset"], "'labelled' (Training + Validation) or 'test' (Test_v2, unlabelled)"
        )
    parts = []
    for source, stem in (("train", "Training"), ("val", "Validation")):
        part = read_csv_labelled(
            folder / f"ISIC-2017_{stem}_Classes.csv",
            folder / f"ISIC-2017_{stem}_Data",
            id_column="image_id",
            label_column="melanoma",
            class_names=MELANOMA_CLASSES,
            suffix=".jpg",
            mode="RGB",
            image_size=size,
        )
        table = read_csv_table(folder / f"ISIC-2017_{stem}_Data_metadata.csv")
        lookup = {i: k for k, i in enumerate(table["image_id"])}
        missing = [i for i in part.ids if i not in lookup]
        if missing:
            raise input_error(
                f"isic2017 {stem} metadata",
                f"no rows for {len(missing)} images, e.g. {missing[0]}",
                "a row for every image",
                raw=True,
            )
        rows = np.asarray([lookup[i] for i in part.ids])
        age_raw = table["age_approximate"][rows]
        age = np.full(len(rows), np.nan)
        known = np.char.isnumeric(age_raw)
        age[known] = age_raw[known].astype(np.float64)
        parts.append(
            (part, {"age": age, "sex": table["sex"][rows].astype(str), "source_split": np.full(len(rows), source)})
        )
    ds = ImageDataset(
        images=np.concatenate([p.images for p, _ in parts]),
        targets=np.concatenate([p.targets for p, _ in parts]),
        ids=np.concatenate([p.ids for p, _ in parts]),
        class_names=np.asarray(MELANOMA_CLASSES),
        task="classification",
        meta={k: np.concatenate([m[k] for _, m in parts]) for k in ("age", "sex", "source_split")},
        provenance={"source": str(folder), "dataset": "isic2017"},
    )
    return ds


# --------------------------------------------------------------------------- PH2
def _load_ph2(name: str, root, image_size, **options) -> ImageDataset:
    opts = _options(name, options, {"task": "classification", "binary_melanoma": False})
    folder = _find_dir(name, root, ("ph2",), "ph2_192x256.npz")
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    path = folder / "ph2_192x256.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, masks = npz["images"], npz["masks"].astype(np.int64)
            labels, names, class_names = npz["labels"].astype(np.int64), npz["names"], npz["class_names"]
    except (OSError, ValueError, KeyError) as exc:
        raise input_error(
            f"ph2 file {path}",
            f"an unreadable archive ({exc})",
            "a .npz with images, masks, labels, names and class_names",
            raw=True,
        ) from exc
    meta = {"diagnosis": class_names[labels].astype(str)}
    provenance = {"source": str(path), "dataset": "ph2", "md5": md5sum(path)}
    if opts["task"] == "segmentation":
        ds = ImageDataset(
            images=images,
            targets=masks,
            ids=names.astype(str),
            class_names=np.asarray(("background", "lesion")),
            task="segmentation",
            meta=meta,
            provenance=provenance,
        )
    elif opts["task"] == "classification":
        if opts["binary_melanoma"]:
            melanoma = int(np.nonzero(class_names == "melanoma")[0][0])
            labels, class_names = (labels == melanoma).astype(np.int64), np.asarray(MELANOMA_CLASSES)
        ds = ImageDataset(
            images=images,
            targets=labels,
            ids=names.astype(str),
            class_names=class_names,
            task="classification",
            meta=meta,
            provenance=provenance,
        )
    else:
        raise input_error("ph2 task", opts["task"], "'classification' or 'segmentation'")
    return _resize_dataset(ds, size)


# --------------------------------------------------------------------------- JSRT
def _load_jsrt(name: str, root, image_size, **options) -> ImageDataset:
    opts = _options(name, options, {"value_map": JSRT_VALUE_MAP, "class_names": JSRT_CLASSES})
    folder = _find_dir(name, root, ("jsrt",), "masks")
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    ds = read_image_mask_pairs(
        folder / "images",
        folder / "masks",
        class_names=opts["class_names"],
        value_map=opts["value_map"],
        mode="L",
        image_size=size,
    )
    meta_path = folder / "jsrt_metadata.csv"
    meta: dict[str, np.ndarray] = {}
    if meta_path.is_file():
        table = read_csv_table(meta_path)
        lookup = {i: k for k, i in enumerate(table["study_id"])}
        rows = np.asarray([lookup.get(i, -1) for i in ds.ids])
        if np.all(rows >= 0):
            meta = {
                "nodule": table["state"][rows],
                "sex": np.char.lower(table["gender"][rows]),
                "age": np.asarray([float(a) if a.strip().isdigit() else np.nan for a in table["age"][rows]]),
            }
    return replace(
        ds,
        meta=meta,
        provenance={
            "source": str(folder),
            "dataset": "jsrt",
            "value_map": {str(k): v for k, v in opts["value_map"].items()},
        },
    )


# --------------------------------------------------------------------------- polyps
def _polyp_loader(dataset: str, subdirs: tuple[str, ...]) -> Callable[..., ImageDataset]:
    def load(name: str, root, image_size, **options) -> ImageDataset:
        opts = _options(name, options, {"threshold": 127})
        folder = _find_dir(name, root, subdirs, "masks")
        size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        ds = read_image_mask_pairs(
            folder / "images",
            folder / "masks",
            class_names=("background", "polyp"),
            threshold=opts["threshold"],
            mode="RGB",
            image_size=size,
        )
        return replace(ds, provenance={"source": str(folder), "dataset": dataset, "mask_threshold": opts["threshold"]})

    return load


# --------------------------------------------------------------------------- MSD lung
def _load_msd_lung(name: str, root, image_size, **options) -> ImageDataset:
    _options(name, options, {})
    if root is None:
        path, provenance = _embedded_file("msd_lung")
        with np.load(path, allow_pickle=False) as npz:
            ds = ImageDataset(
                images=npz["images"][..., None],
                targets=npz["labels"].astype(np.int64),
                ids=npz["ids"],
                class_names=npz["class_names"],
                task="segmentation",
                meta={"source_split": npz["source_split"]},
                provenance=provenance,
            )
    else:
        folder = _find_dir(name, root, ("msd_lung",), "val_patches.h5")
        images, labels, ids, source = [], [], [], []
        for split in ("val", "test"):
            x, y = read_hdf5_patches(folder / f"{split}_patches.h5")
            images.append(x)
            labels.append(y)
            ids.append(np.char.add(f"{split}/", np.char.zfill(np.arange(len(x)).astype(str), 4)))
            source.append(np.full(len(x), split))
        ds = ImageDataset(
            images=np.concatenate(images),
            targets=np.concatenate(labels),
            ids=np.concatenate(ids),
            class_names=np.asarray(("background", "tumour")),
            task="segmentation",
            meta={"source_split": np.concatenate(source)},
            provenance={"source": str(folder), "dataset": "msd_lung"},
        )
    # a few patches are stored twice: keep each copy in the same split
    ds = replace(ds, meta={**ds.meta, "dup_group": exact_duplicate_groups(ds.images)})
    return _resize_dataset(ds, image_size)


# --------------------------------------------------------------------------- the user's own data
# option names and the loaders that accept them (medsure.data.generic); values from the command
# line arrive as JSON or text and are typed there
_GROUP_OPTIONS = {"groups": None, "group_pattern": None, "dedup": False, "max_distance": BUSI_MAX_DISTANCE}
_MASK_OPTIONS = {
    "masks": "masks",
    "images": "images",
    "mask_suffix": None,
    "image_pattern": None,
    "mask_pattern": None,
    "value_map": None,
    "threshold": None,
    "class_names": None,
    "mode": "auto",
}
_GENERIC_OPTIONS: dict[str, dict[str, Any]] = {
    "folder": {"mode": "RGB", "class_names": None, **_GROUP_OPTIONS},
    "segfolder": {**_MASK_OPTIONS, **_GROUP_OPTIONS},
    "jointfolder": {**_MASK_OPTIONS, "classes": None, "task": "segmentation", **_GROUP_OPTIONS},
    "manifest": {
        "task": None,
        "class_names": None,
        "value_map": None,
        "threshold": None,
        "mode": "auto",
        "group_pattern": None,
        "dedup": False,
        "max_distance": BUSI_MAX_DISTANCE,
    },
}
_GENERIC_LAYOUT = {
    "folder": "a folder with one sub-folder per class",
    "segfolder": "a folder holding images/ and masks/",
    "jointfolder": "a folder holding images/<class>/ and masks/<class>/",
    "manifest": "a CSV file with columns image and label and/or mask (optional group, split)",
}


def _load_generic(name: str, root, image_size, **options) -> ImageDataset:
    from medsure.data import generic

    given = {k: v for k, v in options.items() if v is not None}
    if name == "folder" and "task" in given:  # the first attempt: say where segmentation folders go
        raise input_error(
            "load_dataset('folder') option task",
            given["task"],
            "no task option: folder is classification (ROOT/<class>/<image>)",
            "use --dataset segfolder (images/ + masks/), jointfolder or manifest",
        )
    opts = _options(name, given, _GENERIC_OPTIONS[name])
    opts = {k: v for k, v in opts.items() if k in given or _GENERIC_OPTIONS[name][k] is not None}
    if root is None:
        raise input_error(f"load_dataset({name!r}) root", None, _GENERIC_LAYOUT[name], "pass root= (--root)")
    size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    loader = {
        "folder": generic.load_folder,
        "segfolder": generic.load_segfolder,
        "jointfolder": generic.load_jointfolder,
        "manifest": generic.load_manifest,
    }[name]
    return loader(Path(root).expanduser().resolve(), size, opts)


LOADERS: dict[str, Callable[..., ImageDataset]] = {
    "folder": _load_generic,
    "segfolder": _load_generic,
    "jointfolder": _load_generic,
    "manifest": _load_generic,
    "pneumoniamnist": _load_medmnist,
    "breastmnist": _load_medmnist,
    "busi": _load_busi,
    "isic2017": _load_isic2017,
    "ph2": _load_ph2,
    "jsrt": _load_jsrt,
    "kvasir": _polyp_loader("kvasir", ("polyp/kvasir_seg", "kvasir_seg", "kvasir")),
    "cvc": _polyp_loader("cvc", ("polyp/cvc_clinicdb", "cvc_clinicdb", "cvc")),
    "msd_lung": _load_msd_lung,
    **JOINT_LOADERS,  # ph2_joint, busi_joint, isic2017_joint: image labels and masks (data/joint.py)
}


def available_datasets() -> list[str]:
    """Names ``load_dataset`` accepts (the listed sets plus every single-label 2-D MedMNIST flag)."""
    return sorted(set(LOADERS) | {f for f, info in FLAGS.items() if not info.task.startswith("multi-label")})


def load_dataset(
    name: str, *, root: str | Path | None = None, image_size: int | None = None, **options: Any
) -> ImageDataset:
    """Load a dataset by name into memory.

    Parameters
    ----------
    name : "pneumoniamnist", "breastmnist" (embedded 28x28; other sizes and every other 2-D
        MedMNIST flag with ``download=True`` or ``root=``), "busi" (embedded 64x64 grey with
        ``meta["dup_group"]``; ``root=`` a BUSI folder re-reads and re-hashes the originals),
        "folder" (any ``root/<class>/<image>`` set; options ``mode="RGB"|"L"``, ``class_names``),
        "segfolder" (``root/images`` + ``root/masks``; options ``images``, ``masks``, ``mask_suffix``,
        ``image_pattern``, ``mask_pattern``, ``value_map``, ``threshold``, ``class_names``, ``mode``),
        "jointfolder" (``root/images/<class>`` + ``root/masks/<class>``; the segfolder options plus
        ``classes`` and ``task``), "manifest" (``root=`` a CSV with columns image, label, mask,
        group, split; options ``task``, ``class_names``, ``value_map``, ``threshold``, ``mode``);
        the user-data loaders also take ``groups`` (a CSV image,group), ``group_pattern`` (a
        regular expression on file names), ``dedup`` and ``max_distance`` (near-duplicates are
        kept in one split); see :mod:`medsure.data.generic`. "isic2017" (``subset="labelled"|"test"``),
        "ph2" (``task="classification"|"segmentation"``,
        ``binary_melanoma=False``), "jsrt", "kvasir", "cvc", "msd_lung" (embedded).
    root : data folder (the dataset's own folder or the folder holding it); default embedded copy,
        else env ``MEDSURE_DATA_ROOT``, else ``../shared/data``.
    image_size : square output size; default 28 (MedMNIST), 48 (MSD lung), 64 (others).
    **options : per-dataset options above; MedMNIST: ``download=False``, ``verify=True``.

    Returns
    -------
    ImageDataset; ``meta["source_split"]`` holds official splits where the source has them.

    Raises
    ------
    DataUnavailableError : files absent (message names the path expected)
    MedsureInputError : unknown name/option, corrupt files
    """
    _check_image_size(image_size)
    key = str(name).lower()
    loader = LOADERS.get(key)
    if loader is None and key in FLAGS:
        loader = _load_medmnist
    if loader is None:
        raise input_error("dataset", name, "a known dataset: " + ", ".join(available_datasets()))
    return loader(key, root, image_size, **options)
