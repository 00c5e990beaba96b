"""Datasets with an image class *and* a lesion mask per image, for joint models (UML).

The joint sample format is the one of ``--dataset jointfolder`` (:mod:`medsure.data.generic`): a
*segmentation* :class:`~medsure.data.base.ImageDataset` (targets: masks ``(N, H, W)``, class
names: the mask classes) whose ``meta["label"]`` holds each image's class index ``(N,)`` int64,
``meta["label_name"]`` its name, and ``provenance["image_class_names"]`` the image class names
in label order. Splits, subsets and near-duplicate groups therefore work unchanged.

Named sets (from ``../shared/data`` or ``root=``; tests and benchmarks only, never copied;
``busi_joint`` is also embedded at 64 px and is read from the embedded copy without ``root=``):

- ``ph2_joint``: PH2 dermoscopy, 200 images, 3 classes (common nevus, atypical nevus,
  melanoma; ``binary_melanoma=True`` for 2), lesion masks;
- ``busi_joint``: BUSI ultrasound, 780 images, benign / malignant / normal, masks from
  ``busi_masks/`` (``normal`` masks are empty); near-duplicate groups as the BUSI loader, so a
  split keeps each group whole. Without ``root=`` it is the embedded copy (``busi_64.npz`` and
  ``busi_masks_64.npz``, 64x64, CC BY 4.0), like ``busi``: 64 px or smaller;
- ``isic2017_joint``: ISIC 2017 Training + Validation (2,150 images, melanoma vs not) with the
  ``ISIC-2017_*_Part1_GroundTruth_256`` masks; official splits kept in ``meta["source_split"]``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from medsure.data.base import ImageDataset
from medsure.validation import input_error

LABEL_KEY = "label"
LABEL_NAME_KEY = "label_name"
CLASS_NAMES_KEY = "image_class_names"
LESION_CLASSES = ("background", "lesion")


def is_joint(ds: ImageDataset) -> bool:
    """True for a segmentation dataset that also carries image labels (the joint format)."""
    return ds.task == "segmentation" and LABEL_KEY in ds.meta and CLASS_NAMES_KEY in ds.provenance


def joint_labels(ds: ImageDataset, what: str = "dataset") -> tuple[np.ndarray, list[str]]:
    """Image labels ``(N,)`` int64 and image class names of a joint dataset (checked)."""
    if not is_joint(ds):
        raise input_error(
            what,
            f"a {ds.task} dataset without image labels",
            f"a joint dataset: masks plus meta '{LABEL_KEY}' and provenance '{CLASS_NAMES_KEY}'",
            "use ph2_joint, busi_joint, isic2017_joint or jointfolder",
            raw=True,
        )
    names = [str(c) for c in ds.provenance[CLASS_NAMES_KEY]]
    labels = np.asarray(ds.meta[LABEL_KEY]).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise input_error(
            f"{what} labels",
            f"values in [{labels.min()}, {labels.max()}]",
            f"class indices in [0, {len(names) - 1}] for the classes {names}",
            raw=True,
        )
    return labels, names


def make_joint(
    images: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    *,
    image_class_names: list[str] | tuple[str, ...],
    mask_class_names: list[str] | tuple[str, ...] = LESION_CLASSES,
    meta: dict[str, np.ndarray] | None = None,
    provenance: dict | None = None,
) -> ImageDataset:
    """A joint dataset: masks as targets, labels in meta (see the module docstring).

    A mask whose size differs from its image and a label outside the class list are refused.
    """
    if masks.shape != images.shape[:3]:
        raise input_error(
            "masks", f"shape {masks.shape}", f"one mask of each image's size {images.shape[:3]}", raw=True
        )
    labels = np.asarray(labels).astype(np.int64)
    names = np.asarray([str(c) for c in image_class_names])
    if labels.shape != (len(images),):
        raise input_error("labels", f"shape {labels.shape}", f"one label per image ({len(images)},)", raw=True)
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise input_error(
            "labels",
            f"values in [{labels.min()}, {labels.max()}]",
            f"class indices in [0, {len(names) - 1}] for the classes {names.tolist()}",
            raw=True,
        )
    return ImageDataset(
        images=images,
        targets=masks.astype(np.int64),
        ids=np.asarray(ids).astype(str),
        class_names=np.asarray(mask_class_names),
        task="segmentation",
        meta={**(meta or {}), LABEL_KEY: labels, LABEL_NAME_KEY: names[labels]},
        provenance={**(provenance or {}), CLASS_NAMES_KEY: names.tolist()},
    )


def classification_view(ds: ImageDataset) -> ImageDataset:
    """The classification dataset of a joint one (targets: the image labels)."""
    labels, names = joint_labels(ds)
    return replace(ds, targets=labels, class_names=np.asarray(names), task="classification")


def _missing_masks(missing: list[str], folder: Path, pattern: str) -> Exception:
    """One line naming the images without a mask (the first ten)."""
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    return input_error(
        f"mask folder {folder}",
        f"no mask for {len(missing)} image(s): {shown}",
        f"one mask per image ({pattern})",
        raw=True,
    )


# ---- named sets ---------------------------------------------------------------------------


def load_ph2_joint(name: str, root, image_size, **options) -> ImageDataset:
    """PH2 with its 3 classes (or melanoma vs not) and lesion masks."""
    from medsure.data.registry import _load_ph2, _options

    opts = _options(name, options, {"binary_melanoma": False})
    seg = _load_ph2("ph2", root, image_size, task="segmentation")
    cls = _load_ph2("ph2", root, image_size, task="classification", binary_melanoma=opts["binary_melanoma"])
    return make_joint(
        seg.images,
        seg.require_targets("PH2 masks"),
        cls.require_targets("PH2 labels"),
        seg.ids,
        image_class_names=[str(c) for c in cls.class_names],
        meta=dict(seg.meta),
        provenance={**seg.provenance, "dataset": "ph2_joint"},
    )


def load_busi_joint(name: str, root, image_size, **options) -> ImageDataset:
    """BUSI images (``busi/``) with their masks (``busi_masks/<class>/<name>_mask.png``).

    Without ``root`` the embedded 64x64 copy, as for ``busi`` (see :func:`_embedded_busi_joint`).
    """
    from medsure.data.readers import read_mask
    from medsure.data.registry import BUSI_READ_SIZE, _find_dir, _load_busi, _options
    from medsure.data.transforms import resize_masks

    opts = _options(name, options, {"dedup": True})
    if root is None:
        return _embedded_busi_joint(image_size)
    folder = _find_dir("busi", root, ("busi",), "benign")
    mask_root = folder.parent / "busi_masks"
    if not mask_root.is_dir():
        raise input_error(
            "BUSI mask folder", f"{mask_root}, which does not exist", "busi_masks/ beside busi/", raw=True
        )
    cls = _load_busi("busi", folder, BUSI_READ_SIZE, dedup=opts["dedup"])
    paths = [mask_root / Path(str(i)).parent / f"{Path(str(i)).stem}_mask.png" for i in cls.ids]
    missing = [str(i) for i, p in zip(cls.ids, paths, strict=True) if not p.is_file()]
    if missing:
        raise _missing_masks(missing, mask_root, "<class>/<image name>_mask.png")
    masks = np.stack([read_mask(p, image_size=BUSI_READ_SIZE) for p in paths]) > 127
    size = 64 if image_size is None else int(image_size)
    images = cls.images
    if size != BUSI_READ_SIZE:
        from medsure.data.transforms import resize_images

        images, masks = resize_images(images, size), resize_masks(masks.astype(np.int64), size)
    return make_joint(
        images,
        np.asarray(masks, dtype=np.int64),
        cls.require_targets("BUSI labels"),
        cls.ids,
        image_class_names=[str(c) for c in cls.class_names],
        meta=dict(cls.meta),
        provenance={**cls.provenance, "dataset": "busi_joint", "masks": str(mask_root), "resized_to": [size, size]},
    )


def _embedded_busi_joint(image_size: int | None) -> ImageDataset:
    """The embedded ``busi_joint``: the images of the embedded ``busi`` (64x64, its near-duplicate
    groups) with the masks of ``busi_masks_64.npz`` (same order and ids), both MD5-checked against
    the manifest. Sizes as for the embedded ``busi``: 64 (default) or smaller, never upsampled.
    """
    from medsure.data.registry import _embedded_file, _load_busi, _resize_dataset

    cls = _load_busi("busi", None, None)
    path, provenance = _embedded_file("busi_joint")
    with np.load(path, allow_pickle=False) as npz:
        masks, ids = npz["masks"], npz["ids"]
    if not np.array_equal(ids.astype(str), cls.ids.astype(str)):
        raise input_error(
            f"embedded file {path}",
            "masks for other images or in another order than busi_64.npz",
            "one mask per embedded BUSI image, in its order",
            "rebuild with scripts/build_embedded.py",
            raw=True,
        )
    ds = make_joint(
        cls.images,
        masks.astype(np.int64),
        cls.require_targets("BUSI labels"),
        cls.ids,
        image_class_names=[str(c) for c in cls.class_names],
        meta=dict(cls.meta),
        provenance={**provenance, "images": cls.provenance["file"], "images_md5": cls.provenance["md5"]},
    )
    return _resize_dataset(
        ds, image_size, max_size=ds.image_size[0], hint="pass root=<folder holding busi/ and busi_masks/>"
    )


def load_isic2017_joint(name: str, root, image_size, **options) -> ImageDataset:
    """ISIC 2017 Training + Validation (melanoma vs not) with the lesion masks at 256 px."""
    from medsure.data.readers import read_mask
    from medsure.data.registry import _find_dir, _load_isic2017, _options

    _options(name, options, {})
    folder = _find_dir("isic2017", root, ("isic2017",), "ISIC-2017_Training_Classes.csv")
    cls = _load_isic2017("isic2017", folder, image_size)
    stems = {"train": "Training", "val": "Validation"}
    source = np.asarray(cls.meta["source_split"]).astype(str)
    paths = [
        folder / f"ISIC-2017_{stems[s]}_Part1_GroundTruth_256" / f"{i}_mask.png"
        for i, s in zip(cls.ids, source, strict=True)
    ]
    missing = [str(i) for i, p in zip(cls.ids, paths, strict=True) if not p.is_file()]
    if missing:
        raise _missing_masks(missing, paths[0].parent, "ISIC-2017_*_Part1_GroundTruth_256/<id>_mask.png")
    size = cls.image_size
    masks = np.stack([read_mask(p, image_size=size) for p in paths]) > 127
    return make_joint(
        cls.images,
        masks.astype(np.int64),
        cls.require_targets("ISIC labels"),
        cls.ids,
        image_class_names=[str(c) for c in cls.class_names],
        meta=dict(cls.meta),
        provenance={**cls.provenance, "dataset": "isic2017_joint"},
    )


JOINT_LOADERS = {
    "ph2_joint": load_ph2_joint,
    "busi_joint": load_busi_joint,
    "isic2017_joint": load_isic2017_joint,
}
