"""Cached prediction artifacts from small models trained on the real data in ../shared/data.

Used by the feature tests (conformal, calibration, failure detection, segmentation) so that
they check their guarantees on real medical images, not on synthetic numbers. Each model is
trained once (small CNN / small U-Net, few epochs, 28-64 px) and its predictions are cached under
``<repo>/.cache/medsure-tests/``; the cache key holds the name, :data:`VERSION` and options, so
bump VERSION when training or splitting changes. Calls skip the calling test with a reason when
the data is absent.

Splits come from :func:`medsure.training.splits.standard_splits`: ``cal`` and ``test`` are
disjoint held-out data never used for training or early stopping.

>>> cal, test = classification_predictions("pneumoniamnist")
>>> cal, test = segmentation_predictions("kvasir", mc_dropout=8)   # (8, N, 2, 64, 64) logits
>>> shifted = classification_shift_predictions("isic2017_ph2")     # PH2 through the ISIC model
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from medsure.artifact import Predictions, load_predictions, save_predictions
from medsure.data.base import ImageDataset
from medsure.errors import DataUnavailableError

from conftest import REPO_ROOT, SHARED_DATA

VERSION = "2"  # 2: MSD lung splits keep stored-twice patches together
CACHE_DIR = Path(os.environ.get("MEDSURE_TEST_CACHE", REPO_ROOT / ".cache" / "medsure-tests"))
SEED = 0

# name -> dataset loading options and training settings (TrainConfig fields).
# Datasets with an embedded copy (pneumoniamnist, busi, msd_lung) load it (same images as
# ../shared/data); the others read ../shared/data.
_SPECS: dict[str, dict[str, Any]] = {
    "pneumoniamnist": {
        "load": {},
        "shared": False,
        "train": {"model": "small_cnn", "epochs": 6, "batch_size": 64, "lr": 3e-3, "dropout": 0.2},
    },
    "busi": {
        "load": {"image_size": 64},
        "shared": False,
        "train": {"model": "small_cnn", "epochs": 20, "batch_size": 32, "lr": 3e-3, "dropout": 0.2, "patience": 6},
    },
    # ISIC at 32 px: a small CNN from scratch reached test AUC ~0.67 at 32 px and ~0.6 at 64 px
    # in the same time (weak but real; melanoma from scratch on 1300 images is hard).
    "isic2017": {
        "load": {"image_size": 32},
        "shared": True,
        "train": {
            "model": "small_cnn",
            "epochs": 24,
            "batch_size": 32,
            "lr": 3e-3,
            "dropout": 0.2,
            "vflip": True,
            "patience": 0,
        },
    },
    "msd_lung": {
        "load": {},
        "shared": False,
        "train": {"model": "unet", "epochs": 25, "batch_size": 16, "lr": 3e-3, "dropout": 0.1, "patience": 8},
    },
    "jsrt": {
        "load": {"image_size": 64},
        "shared": True,
        "train": {
            "model": "unet",
            "epochs": 20,
            "batch_size": 16,
            "lr": 3e-3,
            "dropout": 0.1,
            "hflip": False,
            "patience": 6,
        },
    },
    "kvasir": {
        "load": {"image_size": 64},
        "shared": True,
        "train": {"model": "unet", "epochs": 10, "batch_size": 16, "lr": 3e-3, "dropout": 0.1, "vflip": True},
    },
}
_SHIFTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "isic2017_ph2": ("isic2017", "ph2", {"image_size": 32, "task": "classification", "binary_melanoma": True}),
    "kvasir_cvc": ("kvasir", "cvc", {"image_size": 64}),
}
CLASSIFICATION_NAMES = ("pneumoniamnist", "busi", "isic2017")
SEGMENTATION_NAMES = ("msd_lung", "jsrt", "kvasir")


def _load(name: str, options: dict[str, Any], shared: bool) -> ImageDataset:
    from medsure.data import load_dataset

    try:
        return load_dataset(name, root=SHARED_DATA if shared else None, **options)
    except DataUnavailableError as exc:
        pytest.skip(f"real data not available for {name}: {exc}")


@functools.cache
def split_datasets(name: str) -> dict[str, ImageDataset]:
    """The train / val / cal / test datasets behind the artifacts of ``name``."""
    from medsure.training.splits import standard_splits

    spec = _SPECS[name]
    return standard_splits(_load(name, spec["load"], spec["shared"]), seed=SEED)


def trained_run(name: str):
    """:class:`medsure.training.LoadedRun` of the cached model for ``name`` (trained if needed)."""
    from medsure.training import TrainConfig, load_run, train

    if name not in _SPECS:
        raise KeyError(f"unknown realpreds name {name!r}; known: {sorted(_SPECS)}")
    run_dir = CACHE_DIR / "runs" / f"{name}-v{VERSION}"
    if not (run_dir / "best.pt").is_file():
        datasets = split_datasets(name)
        spec = _SPECS[name]
        # One thread: the test machine's cores are shared, and 2-thread torch stalls there.
        config = TrainConfig(
            seed=SEED,
            num_threads=1,
            **spec["train"],
            dataset={"name": name, "options": spec["load"], "split_seed": SEED},
        )
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=run_dir.parent))
        train(config, datasets, scratch / "run")
        with contextlib.suppress(OSError):  # another process may have finished first; its run is as good as ours
            os.replace(scratch / "run", run_dir)
        shutil.rmtree(scratch, ignore_errors=True)
    return load_run(run_dir)


@functools.cache
def _cached(key: str, name: str, split: str, mc_dropout: int) -> Predictions:
    path = CACHE_DIR / f"{key}.npz"
    if path.is_file():
        return load_predictions(path)
    from medsure.predict import predict

    if split in _SHIFTS:
        source, target, options = _SHIFTS[split]
        dataset = _load(target, options, shared=True)
        run = trained_run(source)
    else:
        dataset = split_datasets(name)[split]
        run = trained_run(name)
    from medsure.training.trainer import torch_threads

    with torch_threads(1):
        pred = predict(run, dataset, mc_samples=mc_dropout, seed=SEED, batch_size=128)
    save_predictions(path, pred)
    return pred


def _pair(name: str, names: tuple[str, ...], mc_dropout: int) -> tuple[Predictions, Predictions]:
    if name not in names:
        raise KeyError(f"unknown name {name!r}; expected one of {names}")
    return tuple(
        _cached(f"{name}-v{VERSION}-{split}-mc{mc_dropout}", name, split, mc_dropout) for split in ("cal", "test")
    )  # type: ignore[return-value]


def classification_predictions(name: str, *, mc_dropout: int = 0) -> tuple[Predictions, Predictions]:
    """(cal, test) artifacts for "pneumoniamnist", "busi" (3 classes) or "isic2017".

    ``mc_dropout=T`` gives T MC-dropout samples, logits ``(T, N, K)``. For "isic2017" the test
    artifact is the official ISIC 2017 Validation set; cal is held out from ISIC Training.
    """
    return _pair(name, CLASSIFICATION_NAMES, mc_dropout)


def segmentation_predictions(name: str, *, mc_dropout: int = 0) -> tuple[Predictions, Predictions]:
    """(cal, test) artifacts for "msd_lung" (48 px), "jsrt" (4 labels, 64 px) or "kvasir" (64 px)."""
    return _pair(name, SEGMENTATION_NAMES, mc_dropout)


def classification_shift_predictions(name: str = "isic2017_ph2", *, mc_dropout: int = 0) -> Predictions:
    """PH2 (melanoma vs not, 32 px like ISIC) predicted by the ISIC 2017 model."""
    if name != "isic2017_ph2":
        raise KeyError(f"unknown shift {name!r}; expected 'isic2017_ph2'")
    return _cached(f"{name}-v{VERSION}-mc{mc_dropout}", "isic2017", name, mc_dropout)


def segmentation_shift_predictions(name: str = "kvasir_cvc", *, mc_dropout: int = 0) -> Predictions:
    """CVC-ClinicDB (another hospital and device) predicted by the Kvasir-SEG model."""
    if name != "kvasir_cvc":
        raise KeyError(f"unknown shift {name!r}; expected 'kvasir_cvc'")
    return _cached(f"{name}-v{VERSION}-mc{mc_dropout}", "kvasir", name, mc_dropout)
