"""MedMNIST v3 (MedMNIST+) 2-D files: names, official Zenodo URLs and MD5s, checked download,
and loading the npz layout (``train/val/test_images``, ``train/val/test_labels`` of shape (N, 1)).

Facts (file names, checksums, label names, licences) are those published by the MedMNIST
authors (Yang et al., Scientific Data 2023; github.com/MedMNIST/MedMNIST, ``medmnist/info.py``).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsure.data.base import ImageDataset
from medsure.errors import ChecksumError, DataUnavailableError, MedsureInputError
from medsure.utils.io import atomic_write
from medsure.utils.progress import progress
from medsure.validation import input_error

ZENODO_RECORD = "https://zenodo.org/records/10519652/files"
SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
CITATION = (
    "Yang, J. et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D "
    "biomedical image classification. Scientific Data 10, 41 (2023)."
)


@dataclass(frozen=True)
class MedMNISTFlag:
    """One 2-D MedMNIST dataset: label names, channel count, licence and MD5 per image size."""

    flag: str
    task: str
    labels: tuple[str, ...]
    n_channels: int
    n_samples: tuple[int, int, int]
    license: str
    md5: dict[int, str]

    def filename(self, size: int = 28) -> str:
        check_size(self.flag, size)
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"

    def url(self, size: int = 28) -> str:
        url = f"{ZENODO_RECORD}/{self.filename(size)}"
        # Zenodo wants ?download=1; a file:// mirror (tests, local copies) takes the plain path
        return f"{url}?download=1" if url.startswith("http") else url


_ORGAN = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)

FLAGS: dict[str, MedMNISTFlag] = {
    f.flag: f
    for f in [
        MedMNISTFlag(
            "pathmnist",
            "multi-class",
            (
                "adipose",
                "background",
                "debris",
                "lymphocytes",
                "mucus",
                "smooth muscle",
                "normal colon mucosa",
                "cancer-associated stroma",
                "colorectal adenocarcinoma epithelium",
            ),
            3,
            (89996, 10004, 7180),
            "CC BY 4.0",
            {
                28: "a8b06965200029087d5bd730944a56c1",
                64: "55aa9c1e0525abe5a6b9d8343a507616",
                128: "ac42d08fb904d92c244187169d1fd1d9",
                224: "2c51a510bcdc9cf8ddb2af93af1eadec",
            },
        ),
        MedMNISTFlag(
            "chestmnist",
            "multi-label, binary-class",
            (
                "atelectasis",
                "cardiomegaly",
                "effusion",
                "infiltration",
                "mass",
                "nodule",
                "pneumonia",
                "pneumothorax",
                "consolidation",
                "edema",
                "emphysema",
                "fibrosis",
                "pleural",
                "hernia",
            ),
            1,
            (78468, 11219, 22433),
            "CC BY 4.0",
            {
                28: "02c8a6516a18b556561a56cbdd36c4a8",
                64: "9de6cd0b934ebb5b7426cfba5efbae16",
                128: "db107e5590b27930b62dbaf558aebee3",
                224: "45bd33e6f06c3e8cdb481c74a89152aa",
            },
        ),
        MedMNISTFlag(
            "dermamnist",
            "multi-class",
            (
                "actinic keratoses and intraepithelial carcinoma",
                "basal cell carcinoma",
                "benign keratosis-like lesions",
                "dermatofibroma",
                "melanoma",
                "melanocytic nevi",
                "vascular lesions",
            ),
            3,
            (7007, 1003, 2005),
            "CC BY-NC 4.0",
            {
                28: "0744692d530f8e62ec473284d019b0c7",
                64: "b70a2f5635c6199aeaa28c31d7202e1f",
                128: "2defd784463fa5243564e855ed717de1",
                224: "8974907d8e169bef5f5b96bc506ae45d",
            },
        ),
        MedMNISTFlag(
            "octmnist",
            "multi-class",
            ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
            1,
            (97477, 10832, 1000),
            "CC BY 4.0",
            {
                28: "c68d92d5b585d8d81f7112f81e2d0842",
                64: "e229e9440236b774d9f0dfef9d07bdaf",
                128: "0a97e76651ace45c5d943ee3f65b63ae",
                224: "abc493b6d529d5de7569faaef2773ba3",
            },
        ),
        MedMNISTFlag(
            "pneumoniamnist",
            "binary-class",
            ("normal", "pneumonia"),
            1,
            (4708, 524, 624),
            "CC BY 4.0",
            {
                28: "28209eda62fecd6e6a2d98b1501bb15f",
                64: "8f4eceb4ccffa70c672198ea285246c6",
                128: "05b46931834c231683c68f40c47b2971",
                224: "d6a3c71de1b945ea11211b03746c1fe1",
            },
        ),
        MedMNISTFlag(
            "retinamnist",
            "ordinal-regression",
            ("0", "1", "2", "3", "4"),
            3,
            (1080, 120, 400),
            "CC BY 4.0",
            {
                28: "bd4c0672f1bba3e3a89f0e4e876791e4",
                64: "afda852cc34dcda56f86ad2b2457dbcc",
                128: "e48e916a24454daf90583d4e6efb1a18",
                224: "eae7e3b6f3fcbda4ae613ebdcbe35348",
            },
        ),
        MedMNISTFlag(
            "breastmnist",
            "binary-class",
            ("malignant", "normal, benign"),
            1,
            (546, 78, 156),
            "CC BY 4.0",
            {
                28: "750601b1f35ba3300ea97c75c52ff8f6",
                64: "742edef2a1fd1524b2efff4bd7ba9364",
                128: "363e4b3f8d712e9b5de15470a2aaadf1",
                224: "b56378a6eefa9fed602bb16d192d4c8b",
            },
        ),
        MedMNISTFlag(
            "bloodmnist",
            "multi-class",
            (
                "basophil",
                "eosinophil",
                "erythroblast",
                "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
                "lymphocyte",
                "monocyte",
                "neutrophil",
                "platelet",
            ),
            3,
            (11959, 1712, 3421),
            "CC BY 4.0",
            {
                28: "7053d0359d879ad8a5505303e11de1dc",
                64: "2b94928a2ae4916078ca51e05b6b800b",
                128: "adace1e0ed228fccda1f39692059dd4c",
                224: "b718ff6835fcbdb22ba9eacccd7b2601",
            },
        ),
        MedMNISTFlag(
            "tissuemnist",
            "multi-class",
            (
                "Collecting Duct, Connecting Tubule",
                "Distal Convoluted Tubule",
                "Glomerular endothelial cells",
                "Interstitial endothelial cells",
                "Leukocytes",
                "Podocytes",
                "Proximal Tubule Segments",
                "Thick Ascending Limb",
            ),
            1,
            (165466, 23640, 47280),
            "CC BY 4.0",
            {
                28: "ebe78ee8b05294063de985d821c1c34b",
                64: "123ece2eba09d0aa5d698fda57103344",
                128: "61b955355d7425a89687b06cca3ce0c2",
                224: "b077128c4a949f0a4eb01517f9037b9c",
            },
        ),
        MedMNISTFlag(
            "organamnist",
            "multi-class",
            _ORGAN,
            1,
            (34561, 6491, 17778),
            "CC BY 4.0",
            {
                28: "68e3f8846a6bd62f0c9bf841c0d9eacc",
                64: "2dcccc29b88e6da5a01161ef20cda288",
                128: "eeae80d0a227a8d099027e1b3cfd3b60",
                224: "50747347e05c87dd3aaf92c49f9f3170",
            },
        ),
        MedMNISTFlag(
            "organcmnist",
            "multi-class",
            _ORGAN,
            1,
            (12975, 2392, 8216),
            "CC BY 4.0",
            {
                28: "b9ceb9546e10131b32923c5bbeaea2b1",
                64: "3ce34a8724ea6f548e6db4744d03b6a9",
                128: "773c1f009daa3fe5d9a2a201b2a7ed94",
                224: "050f5e875dc056f6768abf94ec9995d1",
            },
        ),
        MedMNISTFlag(
            "organsmnist",
            "multi-class",
            _ORGAN,
            1,
            (13932, 2452, 8827),
            "CC BY 4.0",
            {
                28: "9ab87b696fb54e2a387ebe992d6ed5f1",
                64: "53a6d115339d874c25e309a994ff46d3",
                128: "ded0c5fa01a95dc4978b956f613e9b8e",
                224: "b354719e553fbbb2513d5533f52a4cb1",
            },
        ),
    ]
}


def get_flag(flag: str) -> MedMNISTFlag:
    try:
        return FLAGS[flag.lower()]
    except KeyError:
        raise input_error("MedMNIST flag", flag, "one of the 2-D flags: " + ", ".join(sorted(FLAGS))) from None


def check_size(flag: str, size: int) -> int:
    if size not in SIZES:
        raise input_error(f"MedMNIST {flag} size", size, "one of " + ", ".join(map(str, SIZES)))
    return int(size)


def default_cache_dir() -> Path:
    """Where downloads go: env ``MEDSURE_CACHE_DIR`` or ``~/.cache/medsure``, subfolder medmnist."""
    base = os.environ.get("MEDSURE_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "medsure") / "medmnist"


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str,
    path: str | os.PathLike,
    *,
    expected_md5: str | None = None,
    timeout: float = 60.0,
    desc: str | None = None,
) -> Path:
    """Download ``url`` to ``path`` with a progress bar, via a temporary file renamed on success.

    The MD5 is checked before the rename, so ``path`` only ever holds a verified file.

    Raises
    ------
    DataUnavailableError
        Network unreachable (offline) or HTTP error; names the file and where to place it.
    ChecksumError
        Downloaded bytes have a different MD5 than ``expected_md5``.
    """
    path = Path(path)
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
            total = int(length) if length else None
            with atomic_write(path, "wb") as handle:
                with progress(
                    desc=desc or f"downloading {path.name}", total=total, unit="B", unit_scale=True, unit_divisor=1024
                ) as bar:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        handle.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
                if expected_md5 is not None and digest.hexdigest() != expected_md5:
                    raise input_error(
                        f"download {url}",
                        f"MD5 {digest.hexdigest()}",
                        f"the official MD5 {expected_md5}",
                        "the file was not kept; try again later",
                        raw=True,
                        kind=ChecksumError,
                    )
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise input_error(
            f"download {url}",
            f"a network error ({exc})",
            "a reachable server",
            f"offline? Download it elsewhere and place it at {path}",
            raw=True,
            kind=DataUnavailableError,
        ) from exc
    return path


def fetch_medmnist(
    flag: str, size: int = 28, *, root: str | os.PathLike | None = None, download: bool = True, verify: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Path of the official MedMNIST file, downloading it when absent.

    Parameters
    ----------
    flag : e.g. "pneumoniamnist"; size : 28, 64, 128 or 224
    root : folder holding ``<flag>.npz`` / ``<flag>_<size>.npz`` (default :func:`default_cache_dir`)
    download : fetch from Zenodo when the file is absent
    verify : a local file whose MD5 differs from the official one raises ChecksumError unless
        False; with False it is used and the provenance says ``"verified": False``.

    Returns
    -------
    (path, provenance) with provenance keys source, file, url, md5, expected_md5, verified.
    """
    info = get_flag(flag)
    size = check_size(flag, size)
    folder = Path(root) if root is not None else default_cache_dir()
    path = folder / info.filename(size)
    expected = info.md5[size]
    if not path.is_file():
        if not download:
            raise input_error(
                f"MedMNIST file {info.filename(size)}",
                f"no file at {path}",
                "the file in the data folder",
                f"place it there (from {info.url(size)}) or pass download=True (--download on the command line)",
                raw=True,
                kind=DataUnavailableError,
            )
        download_file(info.url(size), path, expected_md5=expected)
    found = md5sum(path)
    if found != expected and verify:
        raise input_error(
            f"MedMNIST file {path}",
            f"MD5 {found}",
            f"the official MD5 {expected}",
            f"replace the file (from {info.url(size)}) or pass verify=False (--no-verify on the "
            "command line) to use it anyway",
            raw=True,
            kind=ChecksumError,
        )
    provenance = {
        "source": "medmnist",
        "flag": info.flag,
        "size": size,
        "file": str(path),
        "url": info.url(size),
        "md5": found,
        "expected_md5": expected,
        "verified": found == expected,
        "verified_against": "official MedMNIST MD5",
        "license": info.license,
        "citation": CITATION,
    }
    return path, provenance


def load_medmnist_npz(
    path: str | os.PathLike,
    *,
    class_names: tuple[str, ...] | list[str],
    splits: tuple[str, ...] = SPLITS,
    provenance: dict[str, Any] | None = None,
    id_prefix: str = "",
) -> ImageDataset:
    """Read a MedMNIST-layout npz into one ImageDataset with ``meta["source_split"]``.

    Images (N, H, W) become (N, H, W, 1); (N, H, W, 3) stay. Labels (N, 1) become (N,).
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise input_error(
            "MedMNIST file",
            f"{path}, which does not exist",
            "an existing .npz file",
            raw=True,
            kind=DataUnavailableError,
        )
    images, labels, source, ids = [], [], [], []
    try:
        with np.load(path, allow_pickle=False) as npz:
            for split in splits:
                for key in (f"{split}_images", f"{split}_labels"):
                    if key not in npz.files:
                        raise input_error(
                            f"MedMNIST file {path}",
                            f"arrays {npz.files} without {key!r}",
                            "the MedMNIST layout (<split>_images, <split>_labels)",
                            raw=True,
                        )
                x = np.asarray(npz[f"{split}_images"])
                y = np.asarray(npz[f"{split}_labels"])
                if x.ndim == 3:
                    x = x[..., None]
                if x.ndim != 4 or x.dtype != np.uint8:
                    raise input_error(
                        f"MedMNIST file {path}, {split}_images",
                        f"shape {x.shape} of dtype {x.dtype}",
                        "uint8 of shape (N, H, W) or (N, H, W, 3)",
                        raw=True,
                    )
                if y.ndim == 2 and y.shape[1] != 1:
                    raise input_error(
                        f"MedMNIST file {path}, {split}_labels",
                        f"shape {y.shape} (multi-label)",
                        "one label per image (medsure supports single-label classification)",
                        raw=True,
                    )
                y = y.reshape(-1).astype(np.int64)
                if len(y) != len(x):
                    raise input_error(
                        f"MedMNIST file {path}, {split}_labels",
                        f"{len(y)} labels",
                        f"{len(x)}, one per {split} image",
                        raw=True,
                    )
                images.append(x)
                labels.append(y)
                source.append(np.full(len(x), split))
                ids.append(np.char.add(f"{id_prefix}{split}/", np.char.zfill(np.arange(len(x)).astype(str), 6)))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, MedsureInputError):
            raise
        raise input_error(
            f"MedMNIST file {path}",
            f"an unreadable archive ({exc})",
            "a readable .npz",
            "the file is corrupt or truncated; download it again",
            raw=True,
        ) from exc
    return ImageDataset(
        images=np.concatenate(images),
        targets=np.concatenate(labels),
        ids=np.concatenate(ids),
        class_names=np.asarray(class_names),
        task="classification",
        meta={"source_split": np.concatenate(source)},
        provenance=dict(provenance or {"source": str(path)}),
    )


def load_medmnist(
    flag: str, size: int = 28, *, root: str | os.PathLike | None = None, download: bool = True, verify: bool = True
) -> ImageDataset:
    """Official MedMNIST 2-D set as one ImageDataset (``meta["source_split"]`` = official split)."""
    info = get_flag(flag)
    if info.task.startswith("multi-label"):
        raise input_error(
            "MedMNIST flag",
            f"{flag!r}, a multi-label set ({len(info.labels)} labels per image)",
            "a single-label flag (medsure's ImageDataset holds one label per image)",
            raw=True,
        )
    path, provenance = fetch_medmnist(flag, size, root=root, download=download, verify=verify)
    return load_medmnist_npz(path, class_names=info.labels, provenance=provenance)
