"""From a trained model and a dataset to a :class:`~medsure.artifact.Predictions` artifact.

Three ways to get a leading T axis of predictive samples:

- ``mc_samples=T``: Monte-Carlo dropout (Gal & Ghahramani 2016), dropout layers active at test
  time, seeded;
- ``tta=True`` (or a list of view names): test-time augmentation; segmentation outputs are mapped
  back to the original frame before stacking (see :mod:`medsure.tta`);
- :func:`predict_ensemble`: one member per model (deep ensembles, Lakshminarayanan et al. 2017).

Models take ``(N, C, H, W)`` float images in ``[0, 1]`` (``uint8 / 255``), as every model built by
:func:`medsure.models.build_model` does.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsure import __version__
from medsure.artifact import Predictions
from medsure.data.base import ImageDataset
from medsure.errors import MedsureInputError
from medsure.tta import apply_view, check_views, default_views, invert_view
from medsure.utils.progress import progress

_FLOAT16_LIMIT = 1.0e4  # segmentation logits are stored as float16 (max 65504)


def predict(model: nn.Module, dataset: ImageDataset, *, batch_size: int = 64,
            mc_samples: int = 0, tta: bool | Sequence[str] = False, seed: int = 0,
            device: str = "auto", thumbnail_size: int | None = None,
            provenance: dict[str, Any] | None = None) -> Predictions:
    """Run ``model`` on every image of ``dataset``.

    Parameters
    ----------
    model : torch module taking ``(B, C, H, W)`` in [0, 1] and returning logits ``(B, K)``
        (classification) or ``(B, K, H, W)`` (segmentation)
    dataset : ImageDataset; its targets become ``labels``/``masks`` and its meta is copied
    batch_size : images per forward pass
    mc_samples : T > 0 keeps dropout active and returns T stochastic passes, logits
        ``(T, N, K[, H, W])`` with ``sample_kind="mc_dropout"``; the model needs dropout layers
    tta : True for the task's default views, or a list of view names; logits
        ``(V, N, K[, H, W])`` with ``sample_kind="tta"``
    seed : seeds the dropout masks (the caller's global torch RNG state is restored)
    device : "auto" (CUDA when present), "cpu" or "cuda"
    thumbnail_size : longest side of the stored uint8 thumbnails (default 32 for classification,
        64 for segmentation)
    provenance : extra entries merged into the artifact's provenance

    Returns
    -------
    Predictions
        classification logits float32, segmentation logits float16.
    """
    if mc_samples and tta:
        raise MedsureInputError("mc_samples and tta both given; choose one source of samples")
    if not isinstance(mc_samples, int) or mc_samples < 0:
        raise MedsureInputError(f"mc_samples={mc_samples!r}, expected an integer >= 0")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise MedsureInputError(f"batch_size={batch_size!r}, expected a positive integer")
    _check_model_fits(model, dataset)
    task = dataset.task
    views = None
    if tta:
        views = default_views(task) if tta is True else check_views(tta)
    target_device = _device(device)
    with _prepared(model, target_device, mc=mc_samples > 0):
        if mc_samples > 0:
            logits = _stacked([None] * mc_samples, model, dataset, batch_size, target_device,
                              seed, desc="MC dropout")
        elif views is not None:
            logits = _stacked(list(views), model, dataset, batch_size, target_device, seed,
                              desc="TTA")
        else:
            logits = _stacked([None], model, dataset, batch_size, target_device, seed,
                              desc="predict")[0]
    kind = "mc_dropout" if mc_samples > 0 else ("tta" if views is not None else None)
    record = {"mc_samples": int(mc_samples), "tta_views": list(views) if views else None}
    return _to_predictions(logits, dataset, kind, _provenance(model, dataset, seed, record,
                                                               provenance), thumbnail_size)


def predict_ensemble(models: Sequence[nn.Module], dataset: ImageDataset, *, batch_size: int = 64,
                     seed: int = 0, device: str = "auto", thumbnail_size: int | None = None,
                     provenance: dict[str, Any] | None = None) -> Predictions:
    """Stack the logits of several models: ``(M, N, K[, H, W])``, ``sample_kind="ensemble"``.

    Parameters are as in :func:`predict`; every model must output the same K.
    """
    models = list(models)
    if len(models) < 2:
        raise MedsureInputError(f"predict_ensemble got {len(models)} model(s), expected at least 2")
    members = [predict(m, dataset, batch_size=batch_size, seed=seed, device=device,
                       thumbnail_size=thumbnail_size) for m in models]
    shapes = {p.logits.shape for p in members}
    if len(shapes) != 1:
        raise MedsureInputError(f"ensemble members give logits of different shapes {sorted(shapes)}")
    logits = np.stack([p.logits for p in members])
    runs = [p.provenance.get("run") for p in members]
    record = {"ensemble_members": len(models), "runs": runs}
    prov = _provenance(None, dataset, seed, record, provenance)
    return _to_predictions(logits, dataset, "ensemble", prov, thumbnail_size)


# ---- internals --------------------------------------------------------------------------------

def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise MedsureInputError(f"device={device!r}, expected 'auto', 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise MedsureInputError("device='cuda' but torch sees no CUDA device")
    return torch.device(device)


def _check_model_fits(model: nn.Module, dataset: ImageDataset) -> None:
    run = getattr(model, "medsure_run", None)
    if not run:
        return
    record = run["config"]
    spec = record["model"]
    if record["task"] != dataset.task:
        raise MedsureInputError(f"the model does {record['task']} but the dataset is {dataset.task}")
    if dataset.in_channels != spec["in_channels"]:
        raise MedsureInputError(f"dataset images have {dataset.in_channels} channel(s), the model "
                                f"was trained on {spec['in_channels']}")
    if dataset.image_size != (spec["image_size"], spec["image_size"]):
        raise MedsureInputError(
            f"dataset images are {dataset.image_size[0]}x{dataset.image_size[1]} but the model was "
            f"trained at {spec['image_size']}x{spec['image_size']}; load the dataset with "
            f"image_size={spec['image_size']}")
    if len(dataset.class_names) != spec["num_classes"]:
        raise MedsureInputError(f"dataset has {len(dataset.class_names)} classes, the model "
                                f"{spec['num_classes']}")
    trained_names = record.get("class_names")
    if trained_names is not None and list(map(str, dataset.class_names)) != list(map(str, trained_names)):
        raise MedsureInputError(f"dataset classes {list(map(str, dataset.class_names))} differ from the model's "
                                f"{list(map(str, trained_names))} (names and order must match)")


def _dropout_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)
            and m.p > 0]


@contextlib.contextmanager
def _prepared(model: nn.Module, device: torch.device, mc: bool) -> Iterator[None]:
    """Eval mode (dropout on for MC) on ``device``; the model's modes and device are restored."""
    modes = {m: m.training for m in model.modules()}
    try:
        original = next(model.parameters()).device
    except StopIteration:
        original = device
    dropouts = _dropout_modules(model)
    if mc and not dropouts:
        raise MedsureInputError("mc_samples > 0 but the model has no dropout layers with p > 0; "
                                "train it with dropout (e.g. --dropout 0.2)")
    model.eval()
    for module in dropouts if mc else []:
        module.train()
    model.to(device)
    try:
        yield
    finally:
        model.to(original)
        for module, mode in modes.items():
            module.training = mode


@torch.no_grad()
def _stacked(views: list[str | None], model: nn.Module, dataset: ImageDataset, batch_size: int,
             device: torch.device, seed: int, desc: str) -> np.ndarray:
    """Logits for each pass (a view name, or None for a plain/MC pass), stacked: (T, N, ...)."""
    images = torch.from_numpy(np.ascontiguousarray(np.moveaxis(dataset.images, -1, 1)))
    n = len(dataset)
    devices = [device.index or 0] if device.type == "cuda" else []
    outputs = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        bar = progress(total=len(views) * ((n + batch_size - 1) // batch_size), desc=desc)
        for view in views:
            chunks = []
            for start in range(0, n, batch_size):
                batch = images[start:start + batch_size]
                x = (batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float())
                x = x.to(device)
                if view is not None:
                    x = apply_view(view, x)
                logits = model(x).float()
                if view is not None and dataset.task == "segmentation":
                    logits = invert_view(view, logits)
                chunks.append(logits.cpu())
                bar.update(1)
            outputs.append(torch.cat(chunks).numpy())
        bar.close()
    stacked = np.stack(outputs)
    if not np.all(np.isfinite(stacked)):
        raise MedsureInputError("the model produced NaN or infinite logits")
    return stacked


def _thumbnails(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 thumbnails ``(N, h, w)`` (grey) or ``(N, h, w, 3)``, longest side ``size``."""
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1)))
    x = x.float() if x.dtype == torch.uint8 else x.float() * 255.0
    h, w = x.shape[-2:]
    scale = min(1.0, size / max(h, w))
    out_hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    if out_hw != (h, w):
        x = F.interpolate(x, size=out_hw, mode="area")
    thumbs = x.round().clamp_(0, 255).to(torch.uint8).numpy()
    thumbs = np.moveaxis(thumbs, 1, -1)
    return thumbs[..., 0] if thumbs.shape[-1] == 1 else thumbs


def _provenance(model: nn.Module | None, dataset: ImageDataset, seed: int,
                record: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    run = getattr(model, "medsure_run", None) if model is not None else None
    prov: dict[str, Any] = {
        "medsure_version": __version__,
        "dataset": dataset.provenance,
        "seed": int(seed),
        **record,
    }
    if run:
        config = {k: v for k, v in run["config"].items() if k != "data_provenance"}
        prov["run"] = {"run_dir": run["run_dir"], "config": config}
    elif "runs" not in record:
        prov["run"] = {"model_class": type(model).__name__} if model is not None else None
    if extra:
        prov.update(extra)
    return prov


def _to_predictions(logits: np.ndarray, dataset: ImageDataset, kind: str | None,
                    provenance: dict[str, Any], thumbnail_size: int | None) -> Predictions:
    task = dataset.task
    if task == "segmentation":
        logits = np.clip(logits, -_FLOAT16_LIMIT, _FLOAT16_LIMIT).astype(np.float16)
    else:
        logits = logits.astype(np.float32, copy=False)
    size = thumbnail_size or (64 if task == "segmentation" else 32)
    targets = dataset.targets
    return Predictions(
        task=task,
        logits=logits,
        ids=np.asarray(dataset.ids).astype(str),
        class_names=np.asarray(dataset.class_names).astype(str),
        labels=None if task == "segmentation" or targets is None else targets.astype(np.int64),
        masks=None if task == "classification" or targets is None else targets.astype(np.int64),
        thumbnails=_thumbnails(dataset.images, size),
        meta={k: np.asarray(v) for k, v in dataset.meta.items()},
        sample_kind=kind,
        provenance=provenance,
    )
