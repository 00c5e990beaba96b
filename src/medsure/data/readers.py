"""Generic readers: single images, folder-per-class sets, CSV-labelled sets, image/mask folder
pairs, HDF5 patch files, NIfTI and DICOM images.

Every reader returns plain arrays or an :class:`ImageDataset`; broken files raise
:class:`MedsureInputError` naming the file, never a bare PIL/h5py traceback.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsure.data.base import ImageDataset
from medsure.errors import DataUnavailableError
from medsure.utils.progress import progress
from medsure.validation import describe, input_error


def _missing(what: str, path: Path, *, folder: bool = False) -> Exception:
    """The error for a path that is not the file (or folder) expected: says what is there instead."""
    expected = "an existing folder" if folder else "an existing file"
    if path.exists():  # a folder where a file belongs, or the reverse: not "missing"
        there = "a file" if folder else "a folder"
        return input_error(what, f"{path}, {there}", expected, raw=True)
    return input_error(what, f"{path}, which does not exist", expected, raw=True, kind=DataUnavailableError)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
# PIL modes holding more than 8 bits per pixel (16-bit PNG/TIFF, 32-bit int, float TIFF)
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _size_tuple(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise input_error("image_size", image_size, "a positive int or (height, width)")
    return height, width


def read_image(
    path: str | os.PathLike,
    *,
    mode: str = "L",
    image_size: int | tuple[int, int] | None = None,
    resample: str = "bilinear",
) -> np.ndarray:
    """Read one image file as uint8 (H, W, C).

    Parameters
    ----------
    path : image file (PNG, JPEG, BMP, TIFF, GIF; 16-bit and float images are windowed to their
        own min and max, then scaled to uint8)
    mode : "L" (grey, C=1) or "RGB" (C=3)
    image_size : optional output (height, width) or int for square
    resample : "bilinear" for images, "nearest" for label masks

    Raises
    ------
    MedsureInputError
        Unreadable, truncated or non-image file; the message names it.
    """
    from PIL import Image

    if mode not in ("L", "RGB"):
        raise input_error("mode", mode, "'L' or 'RGB'")
    if resample not in ("bilinear", "nearest"):
        raise input_error("resample", resample, "'bilinear' or 'nearest'")
    size = _size_tuple(image_size)
    with _decoded(Path(path), "image file", "a PNG, JPEG, BMP, TIFF or GIF image") as opened:
        # PIL's own conversion clips 16-bit values at 255: window to the image's range instead
        wide = opened.mode in _WIDE_MODES
        img = (Image.fromarray(to_uint8(np.asarray(opened))) if wide else opened).convert(mode)
        if size is not None and img.size != (size[1], size[0]):
            method = Image.Resampling.BILINEAR if resample == "bilinear" else Image.Resampling.NEAREST
            img = img.resize((size[1], size[0]), method)
        array = np.asarray(img, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


@contextlib.contextmanager
def _decoded(path: Path, what: str, accepted: str) -> Iterator[Any]:
    """The PIL image at ``path``, decoded on entry (a truncated file fails here, with the path
    known); any failure to open, decode or convert it inside the block is one error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            yield opened
    except FileNotFoundError:
        raise _missing(what, path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if path.is_dir():
            raise _missing(what, path) from None
        raise input_error(
            f"{what} {path}",
            f"an unreadable image ({exc})",
            accepted,
            "the file is truncated or not an image",
            raw=True,
        ) from exc


def read_mask(path: str | os.PathLike, *, image_size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Read one label mask with its raw values, int64 (H, W).

    8-bit, palette (GIF) and RGB masks are read as grey values 0..255; 16-bit and 32-bit masks
    keep their stored values (a value map then names them). Resizing is nearest-neighbour, so
    no new values appear.

    Raises
    ------
    MedsureInputError
        Unreadable file; the message names it.
    """
    from PIL import Image

    size = _size_tuple(image_size)
    with _decoded(Path(path), "mask file", "a PNG, BMP, TIFF or GIF mask") as opened:
        img = opened if opened.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N") else opened.convert("L")
        if img.mode.startswith("I;16"):
            img = img.convert("I")  # resizes without byte-order surprises
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.NEAREST)
        array = np.asarray(img).astype(np.int64)
    return array


def image_size_of(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as opened:
            width, height = opened.size
    except FileNotFoundError:
        raise _missing("image file", path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise input_error(
            f"image file {path}",
            f"an unreadable image ({exc})",
            "a PNG, JPEG, BMP, TIFF or GIF image",
            "the file is truncated or not an image",
            raw=True,
        ) from exc
    return int(height), int(width)


def read_images(
    paths: Sequence[str | os.PathLike],
    *,
    mode: str = "L",
    image_size: int | tuple[int, int] | None = None,
    resample: str = "bilinear",
    desc: str = "reading images",
) -> np.ndarray:
    """Read many images of one size into uint8 (N, H, W, C); sizes must agree when not resized."""
    arrays = [read_image(p, mode=mode, image_size=image_size, resample=resample) for p in progress(paths, desc=desc)]
    if not arrays:
        channels = 1 if mode == "L" else 3
        size = _size_tuple(image_size) or (0, 0)
        return np.zeros((0, *size, channels), dtype=np.uint8)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise input_error(
            "images",
            f"different sizes {sorted(shapes)[:3]}...",
            "images of one size",
            "pass image_size to resize them",
            raw=True,
        )
    return np.stack(arrays)


def list_images(folder: str | os.PathLike, *, exclude: Callable[[str], bool] | None = None) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _missing("image folder", folder, folder=True)
    files = [
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    if exclude is not None:
        files = [p for p in files if not exclude(p.name)]
    return sorted(files)


def read_folder_per_class(
    root: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    mode: str = "L",
    image_size: int | tuple[int, int] | None = None,
    exclude: Callable[[str], bool] | None = None,
) -> ImageDataset:
    """Classification set laid out as ``root/<class name>/<image>``.

    Parameters
    ----------
    root : folder with one sub-folder per class (names may contain spaces and parentheses)
    class_names : sub-folder names in label order; default: sorted sub-folder names
    mode, image_size : see :func:`read_image`
    exclude : predicate on file names to skip (e.g. BUSI's ``*_mask.png``)

    Returns
    -------
    ImageDataset with ids ``"<class>/<file name>"`` and ``meta["path"]``.
    """
    root = Path(root)
    if not root.is_dir():
        raise _missing("dataset folder", root, folder=True)
    if class_names is None:
        class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        raise input_error(f"dataset folder {root}", "no class sub-folders", "the layout root/<class>/<image>", raw=True)
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        files = list_images(root / name, exclude=exclude)
        if not files:
            raise input_error(f"class folder {root / name}", "no images", "at least one image per class", raw=True)
        paths += files
        labels += [label] * len(files)
    images = read_images(paths, mode=mode, image_size=image_size, desc=f"reading {root.name}")
    return ImageDataset(
        images=images,
        targets=np.asarray(labels, dtype=np.int64),
        ids=np.asarray([f"{p.parent.name}/{p.name}" for p in paths]),
        class_names=np.asarray(class_names),
        task="classification",
        meta={"path": np.asarray([str(p) for p in paths])},
        provenance={"source": str(root)},
    )


def read_csv_table(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a CSV with a header row into columns of str (N,)."""
    path = Path(path)
    if not path.is_file():
        raise _missing("CSV file", path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise input_error(f"CSV file {path}", "an empty file", "a header row", raw=True)
    header, body = rows[0], rows[1:]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise input_error(
            f"CSV file {path}",
            f"rows {bad[:5]} with a different number of columns",
            f"{len(header)} columns in every row, as in the header",
            raw=True,
        )
    table = np.asarray(body, dtype=str).reshape(len(body), len(header))
    return {name: table[:, i] for i, name in enumerate(header)}


def read_csv_labelled(
    csv_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    id_column: str,
    label_column: str,
    class_names: Sequence[str],
    suffix: str = ".jpg",
    mode: str = "RGB",
    image_size: int | tuple[int, int] | None = None,
    meta_columns: Sequence[str] = (),
) -> ImageDataset:
    """Classification set whose labels are a CSV column and images ``image_dir/<id><suffix>``.

    Labels may be written as integers or floats ("1.0"); they must lie in [0, len(class_names)).
    """
    table = read_csv_table(csv_path)
    for column in (id_column, label_column, *meta_columns):
        if column not in table:
            raise input_error(f"CSV {csv_path} column", column, "one of " + ", ".join(map(repr, sorted(table))))
    try:
        raw = table[label_column].astype(np.float64)
    except ValueError as exc:
        raise input_error(
            f"CSV {csv_path} column {label_column!r}", f"a non-numeric label ({exc})", "integer class indices", raw=True
        ) from None
    labels = raw.astype(np.int64)
    if np.any(labels != raw) or np.any((labels < 0) | (labels >= len(class_names))):
        raise input_error(
            f"CSV {csv_path} column {label_column!r}",
            f"labels {np.unique(raw)[:10].tolist()}",
            f"integers in [0, {len(class_names) - 1}] for classes {list(class_names)}",
            raw=True,
        )
    ids = table[id_column]
    paths = [Path(image_dir) / f"{i}{suffix}" for i in ids]
    images = read_images(paths, mode=mode, image_size=image_size, desc=f"reading {Path(image_dir).name}")
    return ImageDataset(
        images=images,
        targets=labels,
        ids=ids.astype(str),
        class_names=np.asarray(class_names),
        task="classification",
        meta={c: table[c] for c in meta_columns},
        provenance={"source": str(csv_path)},
    )


def map_mask_values(mask: np.ndarray, value_map: Mapping[int, int], *, name: str = "mask") -> np.ndarray:
    """Map raw mask values to label ids with a lookup table; unknown values raise.

    Parameters
    ----------
    mask : integer ndarray, any shape
    value_map : raw value -> label id
    name : file name used in the error message
    """
    mask = np.asarray(mask)
    lut = np.full(256 if mask.dtype == np.uint8 else int(mask.max()) + 1, -1, dtype=np.int64)
    for raw, label in value_map.items():
        if 0 <= raw < len(lut):
            lut[raw] = label
    if mask.size and mask.min() < 0:
        raise input_error(name, f"negative mask value {mask.min()}", f"one of {describe(sorted(value_map))}", raw=True)
    mapped = lut[mask]
    if np.any(mapped < 0):
        unknown = np.unique(mask[mapped < 0])
        raise input_error(
            name,
            f"mask values {unknown[:10].tolist()}",
            f"values of the value map {describe(dict(value_map))}",
            raw=True,
        )
    return mapped


def read_image_mask_pairs(
    image_dir: str | os.PathLike,
    mask_dir: str | os.PathLike,
    *,
    class_names: Sequence[str],
    value_map: Mapping[int, int] | None = None,
    threshold: int | None = None,
    mode: str = "L",
    image_size: int | tuple[int, int] | None = None,
    mask_suffix: str | None = None,
) -> ImageDataset:
    """Segmentation set of ``image_dir/<name>`` with masks ``mask_dir/<name>``.

    Exactly one of ``value_map`` (exact raw value -> label, for lossless PNG masks; unknown
    values raise naming the file) or ``threshold`` (binary: raw > threshold -> 1, for JPEG
    masks whose edges are blurred by compression) must be given. Masks are resized with
    nearest neighbour (value map) or thresholded after bilinear resizing (threshold).
    """
    if (value_map is None) == (threshold is None):
        raise input_error(
            "value_map and threshold",
            "both" if value_map is not None else "neither",
            "exactly one of value_map (exact mask values) or threshold (binary)",
            raw=True,
        )
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    image_paths = list_images(image_dir)
    if not image_paths:
        raise input_error(f"image folder {image_dir}", "no images", "at least one image", raw=True)
    mask_paths = [mask_dir / (p.stem + mask_suffix if mask_suffix else p.name) for p in image_paths]
    missing = [str(m) for m in mask_paths if not m.is_file()]
    if missing:
        raise input_error(
            f"mask folder {mask_dir}",
            f"{len(missing)} masks missing, e.g. {missing[0]}",
            "one mask per image",
            raw=True,
            kind=DataUnavailableError,
        )
    images = read_images(image_paths, mode=mode, image_size=image_size, desc=f"reading {image_dir.parent.name}")
    masks = []
    for mask_path in progress(mask_paths, desc="reading masks"):
        if value_map is not None:
            raw = read_image(mask_path, mode="L", image_size=image_size, resample="nearest")[..., 0]
            masks.append(map_mask_values(raw, value_map, name=str(mask_path)))
        else:
            raw = read_image(mask_path, mode="L", image_size=image_size, resample="bilinear")[..., 0]
            masks.append((raw > threshold).astype(np.int64))
    return ImageDataset(
        images=images,
        targets=np.stack(masks).astype(np.int64),
        ids=np.asarray([p.name for p in image_paths]),
        class_names=np.asarray(class_names),
        task="segmentation",
        meta={},
        provenance={"source": str(image_dir.parent)},
    )


def read_hdf5_patches(
    path: str | os.PathLike, *, image_key: str = "images", label_key: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Read 2-D patches from an HDF5 file.

    Returns
    -------
    images : float32 (N, H, W, C); stored (N, C, H, W) with C <= 4 or (N, H, W) are reordered
    labels : int64 (N, H, W)
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise _missing("HDF5 file", path)
    try:
        with h5py.File(path, "r") as handle:
            for key in (image_key, label_key):
                if key not in handle:
                    raise input_error(f"HDF5 file {path}", f"datasets {list(handle)}", f"a dataset {key!r}", raw=True)
            images = np.asarray(handle[image_key][...], dtype=np.float32)
            labels = np.asarray(handle[label_key][...])
    except OSError as exc:
        raise input_error(f"HDF5 file {path}", f"an unreadable file ({exc})", "a readable HDF5 file", raw=True) from exc
    if images.ndim == 3:
        images = images[..., None]
    elif images.ndim == 4 and images.shape[1] <= 4 and images.shape[-1] > 4:
        images = np.moveaxis(images, 1, -1)
    if images.ndim != 4:
        raise input_error(
            f"HDF5 file {path}, {image_key}", f"shape {images.shape}", "shape (N, C, H, W) or (N, H, W)", raw=True
        )
    if labels.ndim == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != images.shape[:3]:
        raise input_error(
            f"HDF5 file {path}, {label_key}", f"shape {labels.shape}", f"shape {images.shape[:3]}", raw=True
        )
    rounded = np.rint(labels)
    if not np.array_equal(rounded, labels):
        raise input_error(f"HDF5 file {path}, {label_key}", "non-integer values", "integer label ids", raw=True)
    return images, rounded.astype(np.int64)


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI image (nibabel). Returns (float32 voxel array as stored, 4x4 affine)."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    path = Path(path)
    if not path.is_file():
        raise _missing("NIfTI file", path)
    try:
        image = nib.load(str(path))
        if not isinstance(image, SpatialImage):  # a file nibabel reads, but without voxels and an affine
            raise TypeError(f"a {type(image).__name__}, not a spatial image")
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel raises several unrelated types for broken files
        raise input_error(
            f"NIfTI file {path}", f"an unreadable file ({exc})", "a readable NIfTI image", raw=True
        ) from exc
    return data, np.asarray(image.affine, dtype=np.float64)


def read_dicom(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """Read one DICOM image (pydicom), applying RescaleSlope/Intercept.

    Returns (float32 pixel array (H, W) or (frames, H, W), header subset: modality, pixel
    spacing, patient sex/age when present).
    """
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise _missing("DICOM file", path)
    try:
        dataset = pydicom.dcmread(str(path))
        pixels = dataset.pixel_array.astype(np.float32)
    except Exception as exc:  # pydicom raises several types for broken or pixel-less files
        raise input_error(
            f"DICOM file {path}", f"an unreadable file ({exc})", "a DICOM file with pixel data", raw=True
        ) from exc
    slope = float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
    header = {
        key: str(getattr(dataset, key))
        for key in ("Modality", "PixelSpacing", "PatientSex", "PatientAge")
        if hasattr(dataset, key)
    }
    return pixels * slope + intercept, header


def to_uint8(array: np.ndarray, *, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Window ``array`` to [low, high] (default: its min and max) and scale to uint8."""
    array = np.asarray(array, dtype=np.float64)
    low = float(array.min()) if low is None else float(low)
    high = float(array.max()) if high is None else float(high)
    if not high > low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.rint(np.clip((array - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)
