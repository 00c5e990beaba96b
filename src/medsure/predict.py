"""From a trained model and a dataset to a :class:`~medsure.artifact.Predictions` artifact.

Three ways to get a leading T axis of predictive samples:

- ``mc_samples=T``: Monte-Carlo dropout (Gal & Ghahramani 2016), dropout layers active at test
  time, seeded per case: case ``i``'s masks in pass ``t`` come from ``(seed, first_case + i, t)``
  only (a counter-based hash, :func:`_case_uniform_bits`), so a case gets the same samples
  whatever the batch size, the shard it is in, or the worker that predicts it;
- ``tta=True`` (or a list of view names): test-time augmentation; segmentation outputs are mapped
  back to the original frame before stacking (see :mod:`medsure.tta`);
- :func:`predict_ensemble`: one member per model (deep ensembles, Lakshminarayanan et al. 2017).

Models take ``(N, C, H, W)`` float images in ``[0, 1]`` (``uint8 / 255``), as every model built by
:func:`medsure.models.build_model` does. Pass a trained run whole — a
:class:`~medsure.training.LoadedRun` from :func:`~medsure.training.load_run` or ``TrainResult.run`` —
and the dataset is checked against its run record (task, channels, size, class names) and the
artifact records the run; a bare ``nn.Module`` is run as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsure.artifact import JointPredictions, Predictions
from medsure.data.base import ImageDataset
from medsure.errors import MedsureInputError
from medsure.explain import CAMResults, cam_method
from medsure.models import gradcam_target_layer
from medsure.training.environment import resolve_device
from medsure.training.run import LoadedRun
from medsure.tta import apply_view, check_views, default_views, invert_view
from medsure.utils.io import with_version
from medsure.utils.progress import progress
from medsure.validation import check_int, input_error

_FLOAT16_LIMIT = 1.0e4  # segmentation logits are stored as float16 (max 65504)


def predict(
    model: nn.Module | LoadedRun,
    dataset: ImageDataset,
    *,
    batch_size: int = 64,
    mc_samples: int = 0,
    tta: bool | Sequence[str] = False,
    seed: int = 0,
    device: str = "auto",
    thumbnail_size: int | None = None,
    provenance: dict[str, Any] | None = None,
    first_case: int = 0,
) -> Predictions:
    """Run ``model`` on every image of ``dataset``.

    Parameters
    ----------
    model : a trained run (:class:`~medsure.training.LoadedRun`: model and run record), or a
        torch module taking ``(B, C, H, W)`` in [0, 1] and returning logits ``(B, K)``
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
    first_case : index of ``dataset``'s first case in the whole set it was cut from (a shard):
        MC-dropout masks of case ``i`` come from ``(seed, first_case + i)``, so predicting a set
        in shards gives exactly the samples of predicting it whole

    Returns
    -------
    Predictions
        classification logits float32, segmentation logits float16.
    """
    if mc_samples and tta:
        raise input_error("mc_samples and tta", "both", "one source of samples", "choose one", raw=True)
    check_int("mc_samples", mc_samples, low=0)
    check_int("batch_size", batch_size, low=1)
    check_int("first_case", first_case, low=0)
    net, run = _network(model, dataset)
    if run is not None and run.task == "joint":
        raise input_error(
            "model",
            "a joint (uml) run",
            "a single-task run for predict()",
            "use predict_joint for joint runs",
            raw=True,
        )
    task = dataset.task
    views = None
    if tta:
        views = default_views(task) if tta is True else check_views(tta)
    target_device = resolve_device(device)
    with _prepared(net, target_device, mc=mc_samples > 0):
        if mc_samples > 0:
            logits = _stacked(
                [None] * mc_samples, net, dataset, batch_size, target_device, seed, "MC dropout", first_case
            )
        elif views is not None:
            logits = _stacked(list(views), net, dataset, batch_size, target_device, seed, desc="TTA")
        else:
            logits = _stacked([None], net, dataset, batch_size, target_device, seed, desc="predict")[0]
    kind = "mc_dropout" if mc_samples > 0 else ("tta" if views is not None else None)
    record: dict[str, Any] = {"mc_samples": int(mc_samples), "tta_views": list(views) if views else None}
    evidence = run.evidential if run is not None else None
    if evidence is not None:  # an evidential run: its outputs are evidence; the file holds alpha
        logits = _log_alpha(logits, evidence)
        record["evidence"] = evidence
    pred = _to_predictions(
        logits, dataset, kind, _provenance(net, run, dataset, seed, record, provenance), thumbnail_size
    )
    return replace(pred, evidential=True) if evidence is not None else pred


def _log_alpha(outputs: np.ndarray, evidence: str) -> np.ndarray:
    """``log(f(outputs) + 1)``: what an evidential artifact stores as logits (float32)."""
    from medsure.evidential import alpha_from_outputs

    return torch.log(alpha_from_outputs(torch.from_numpy(np.asarray(outputs, dtype=np.float32)), evidence)).numpy()


def predict_joint(
    run: LoadedRun,
    dataset: ImageDataset,
    *,
    batch_size: int = 64,
    mc_samples: int = 0,
    seed: int = 0,
    device: str = "auto",
    thumbnail_size: int | None = None,
    provenance: dict[str, Any] | None = None,
    first_case: int = 0,
) -> JointPredictions:
    """Run a joint (UML) run on a joint dataset: Dirichlet alpha for the image classes and per
    pixel, labels and masks, for the same ids.

    Parameters are as in :func:`predict` (no TTA; MC dropout seeded per case with ``first_case``
    as there). ``dataset`` is a joint dataset
    (:mod:`medsure.data.joint`; unlabelled: no masks, no labels).

    Returns
    -------
    JointPredictions
        classification alpha ``([T,] N, K)`` and segmentation alpha ``([T,] N, K_seg, H, W)``,
        both stored as log alpha (``evidential=True``).
    """
    from medsure.data.joint import LABEL_KEY, classification_view

    check_int("mc_samples", mc_samples, low=0)
    check_int("batch_size", batch_size, low=1)
    if not isinstance(run, LoadedRun) or run.task != "joint":
        raise input_error("run", f"a {getattr(run, 'task', type(run).__name__)} run", "a joint (uml) run", raw=True)
    run.check_fits(dataset)
    evidence = run.evidential or "softplus"
    net, target_device = run.model, resolve_device(device)
    images = torch.from_numpy(np.ascontiguousarray(np.moveaxis(dataset.images, -1, 1)))
    passes = max(mc_samples, 1)
    class_out: list[np.ndarray] = []
    seg_out: list[np.ndarray] = []
    with _prepared(net, target_device, mc=mc_samples > 0), torch.no_grad():
        devices = [target_device.index or 0] if target_device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _case_dropout(net, seed, mc_samples > 0) as masks:
            torch.manual_seed(seed)
            bar = progress(total=passes * ((len(dataset) + batch_size - 1) // batch_size), desc="predict joint")
            for t in range(passes):
                chunks: dict[str, list[torch.Tensor]] = {"class": [], "seg": []}
                for start in range(0, len(dataset), batch_size):
                    batch = images[start : start + batch_size]
                    x = (batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()).to(target_device)
                    masks.start(first_case + start, x.shape[0], t, target_device)
                    outputs = net(x)
                    for key in chunks:
                        chunks[key].append(outputs[key].float().cpu())
                    bar.update(1)
                class_out.append(torch.cat(chunks["class"]).numpy())
                seg_out.append(torch.cat(chunks["seg"]).numpy())
            bar.close()
    for name, out in (("class", class_out), ("segmentation", seg_out)):
        if not all(np.all(np.isfinite(o)) for o in out):
            raise input_error(f"model {name} outputs", "NaN or infinite values", "finite outputs", raw=True)
    kind = "mc_dropout" if mc_samples > 0 else None
    cls_logits = _log_alpha(np.stack(class_out), evidence)
    seg_logits = _log_alpha(np.stack(seg_out), evidence)
    if mc_samples == 0:
        cls_logits, seg_logits = cls_logits[0], seg_logits[0]
    record = {"mc_samples": int(mc_samples), "tta_views": None, "evidence": evidence}
    prov = _provenance(net, run, dataset, seed, record, provenance)
    segmentation = replace(_to_predictions(seg_logits, dataset, kind, prov, thumbnail_size), evidential=True)
    has_labels = LABEL_KEY in dataset.meta and dataset.targets is not None
    cls_ds = (
        classification_view(dataset)
        if has_labels
        else replace(dataset, targets=None, class_names=np.asarray(run.class_names), task="classification")
    )
    classification = replace(_to_predictions(cls_logits, cls_ds, kind, prov, thumbnail_size or 64), evidential=True)
    return JointPredictions(classification, segmentation)


def _network(model: nn.Module | LoadedRun, dataset: ImageDataset) -> tuple[nn.Module, LoadedRun | None]:
    """The module to run, and its run (checked against ``dataset``) when ``model`` is a trained run."""
    if isinstance(model, LoadedRun):
        model.check_fits(dataset)
        return model.model, model
    return model, None


def predict_ensemble(
    models: Sequence[nn.Module | LoadedRun],
    dataset: ImageDataset,
    *,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    thumbnail_size: int | None = None,
    provenance: dict[str, Any] | None = None,
) -> Predictions:
    """Stack the logits of several models: ``(M, N, K[, H, W])``, ``sample_kind="ensemble"``.

    Parameters are as in :func:`predict` (each member a run or a module); every model must
    output the same K.
    """
    models = list(models)
    if len(models) < 2:
        raise input_error("predict_ensemble models", f"{len(models)} model(s)", "at least 2", raw=True)
    members = [
        predict(m, dataset, batch_size=batch_size, seed=seed, device=device, thumbnail_size=thumbnail_size)
        for m in models
    ]
    shapes = {p.logits.shape for p in members}
    if len(shapes) != 1:
        raise input_error("ensemble members' logits", f"shapes {sorted(shapes)}", "one shape for all members", raw=True)
    logits = np.stack([p.logits for p in members])
    runs = [p.provenance.get("run") for p in members]
    record = {"ensemble_members": len(models), "runs": runs}
    prov = _provenance(None, None, dataset, seed, record, provenance)
    pred = _to_predictions(logits, dataset, "ensemble", prov, thumbnail_size)
    # members of evidential runs hold log alpha: the ensemble file keeps their alpha (T axis = members)
    return replace(pred, evidential=True) if all(p.evidential for p in members) else pred


def predict_cams(
    model: nn.Module | LoadedRun,
    dataset: ImageDataset,
    ids: Sequence[str],
    *,
    targets: Sequence[Sequence[int]] | None = None,
    method: str = "gradcam",
    target_layer: nn.Module | None = None,
    batch_size: int = 32,
) -> CAMResults:
    """Class-activation maps of the cases ``ids`` of ``dataset`` (classifiers).

    Parameters
    ----------
    model : a trained run (checked against ``dataset`` like :func:`predict`) or a module
    ids : case ids of ``dataset``; the maps follow this order
    targets : label lists, one per id (e.g. a conformal set; may be empty), or None for the
        predicted class
    method : a name of :data:`medsure.explain.CAM_METHODS` ("gradcam", "gradcam++")
    target_layer : the layer to explain; default the model's last stage
        (:func:`medsure.models.gradcam_target_layer`), else its last ``nn.Conv2d``
    batch_size : images per forward/backward pass

    Returns
    -------
    CAMResults
        one map ``(H, W)`` per (case, class), at the input's resolution.
    """
    cam_class = cam_method(method)
    net, _ = _network(model, dataset)
    if dataset.task != "classification":
        raise input_error("dataset task", dataset.task, "classification (CAMs explain class scores)")
    index_of = {str(i): k for k, i in enumerate(dataset.ids)}
    missing = [str(i) for i in ids if str(i) not in index_of]
    if missing:
        raise input_error(
            "ids",
            missing[:5],
            "ids of the dataset",
            f"{len(missing)} id(s) are not in it" if len(missing) > 5 else None,
        )
    if targets is not None and len(targets) != len(ids):
        raise input_error("targets", f"{len(targets)} label lists", f"one per id ({len(ids)})", raw=True)
    images = dataset.images[np.array([index_of[str(i)] for i in ids], dtype=np.int64)]
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1)))
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if target_layer is None:
        try:
            target_layer = gradcam_target_layer(net)
        except MedsureInputError:
            target_layer = None  # not one of medsure's classifiers: the CAM takes the last Conv2d
    with cam_class(net, target_layer, batch_size=batch_size) as cam:
        label_sets = [list(t) for t in targets] if targets is not None else None
        if label_sets is None:
            with torch.no_grad():
                label_sets = [[int(c)] for c in net(x).argmax(1).tolist()]
        maps = cam(x, label_sets)
    rows = [(j, c) for j, labels in enumerate(label_sets) for c in labels]
    size = tuple(x.shape[2:])
    return CAMResults(
        method=cam_class.name,
        class_names=[str(c) for c in dataset.class_names],
        ids=np.array([str(ids[j]) for j, _ in rows], dtype=str),
        classes=np.array([c for _, c in rows], dtype=np.int64),
        maps=(
            np.concatenate([m for m in maps if len(m)]).astype(np.float32) if rows else np.zeros((0, *size), np.float32)
        ),
        images=images[np.array([j for j, _ in rows], dtype=np.int64)],
    )


# ---- internals --------------------------------------------------------------------------------


def _dropout_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


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
        raise input_error(
            "mc_samples > 0",
            "a model without dropout layers (p > 0)",
            "a model with dropout for MC dropout",
            "train it with dropout (e.g. --dropout 0.2)",
            raw=True,
        )
    unsupported = sorted({type(m).__name__ for m in dropouts if not isinstance(m, _CASE_DROPOUTS)})
    if mc and unsupported:
        raise input_error(
            "mc_samples > 0",
            f"a model with {', '.join(unsupported)} layers",
            "nn.Dropout or nn.Dropout1d/2d/3d layers (MC dropout is seeded per case for these)",
            raw=True,
        )
    # dropout stays in eval mode (the identity): _case_dropout's hooks apply the per-case masks
    model.eval()
    model.to(device)
    try:
        yield
    finally:
        model.to(original)
        for module, mode in modes.items():
            module.training = mode


@torch.no_grad()
def _stacked(
    views: list[str | None],
    model: nn.Module,
    dataset: ImageDataset,
    batch_size: int,
    device: torch.device,
    seed: int,
    desc: str,
    first_case: int | None = None,
) -> np.ndarray:
    """Logits for each pass (a view name, or None for a plain/MC pass), stacked: (T, N, ...).

    ``first_case`` not None: MC dropout, case ``i``'s masks in pass ``t`` seeded by
    ``(seed, first_case + i, t)`` (:func:`_case_dropout`)."""
    images = torch.from_numpy(np.ascontiguousarray(np.moveaxis(dataset.images, -1, 1)))
    n = len(dataset)
    devices = [device.index or 0] if device.type == "cuda" else []
    outputs = []
    with torch.random.fork_rng(devices=devices), _case_dropout(model, seed, first_case is not None) as masks:
        torch.manual_seed(seed)
        bar = progress(total=len(views) * ((n + batch_size - 1) // batch_size), desc=desc)
        for t, view in enumerate(views):
            chunks = []
            for start in range(0, n, batch_size):
                batch = images[start : start + batch_size]
                x = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
                x = x.to(device)
                masks.start((first_case or 0) + start, x.shape[0], t, device)
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
        raise input_error("model logits", "NaN or infinite values", "finite logits", raw=True)
    return stacked


_CASE_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_M32 = 0xFFFFFFFF


def _to_int32(value: int) -> int:
    """``value mod 2**32`` as a signed 32-bit integer (torch has no uint32 arithmetic)."""
    value &= _M32
    return value - (1 << 32) if value >= 1 << 31 else value


def _mix32(z: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser ("lowbias32", C. Wellons' hash prospector) on int32 tensors.

    int32 multiplication wraps modulo 2**32 (two's complement), and ``>>`` on int32 is
    arithmetic, so the logical shifts mask off the copied sign bits.
    """
    z = z ^ ((z >> 16) & 0xFFFF)
    z = z * _to_int32(0x7FEB352D)
    z = z ^ ((z >> 15) & 0x1FFFF)
    z = z * _to_int32(0x846CA68B)
    return z ^ ((z >> 16) & 0xFFFF)


def _mix32_np(z: np.ndarray) -> np.ndarray:
    """:func:`_mix32` on uint32 arrays (the same bits): the few per-case keys of a batch are
    hashed in numpy, whose per-call cost on small arrays is a fraction of torch's."""
    z = z ^ (z >> np.uint32(16))
    z = z * np.uint32(0x7FEB352D)
    z = z ^ (z >> np.uint32(15))
    z = z * np.uint32(0x846CA68B)
    return z ^ (z >> np.uint32(16))


def _case_uniform_bits(keys: torch.Tensor, size: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """24 uniform random bits ``(B, size)`` int32 in ``[0, 2**24)``: element ``j`` of row ``b`` is a
    hash of ``(keys[b], j)`` only (a counter-based generator: no state, any layout). ``index``:
    ``arange(size) * 0x9E3779B9`` (int32) when the caller keeps it."""
    if index is None:
        index = torch.arange(size, dtype=torch.int32, device=keys.device) * _to_int32(0x9E3779B9)
    return (_mix32(keys[:, None] + index[None, :]) >> 8) & 0xFFFFFF


class _CaseMasks:
    """Per-case dropout masks for the batch being run, applied by forward hooks on the dropout
    layers (which stay in eval mode, the identity)."""

    def __init__(self, seed: int, active: bool = True) -> None:
        self.active = active
        low, high = np.array([seed & _M32], np.uint32), np.array([(seed >> 32) & _M32], np.uint32)
        self.seed_key = int(_mix32_np(_mix32_np(low) ^ high)[0])
        self.keys: np.ndarray | None = None  # uint32 (B,), one key per case of the batch
        self.device = torch.device("cpu")
        self.calls = 0
        self._index: dict[tuple[int, torch.device], torch.Tensor] = {}

    def start(self, first: int, count: int, t: int, device: torch.device) -> None:
        """The next forward pass runs cases ``first .. first + count - 1`` in pass ``t``."""
        if not self.active:  # no MC dropout: nothing to prepare per batch
            return
        if first + count > 1 << 31:
            raise input_error("case index", first + count - 1, "below 2**31 for MC dropout", raw=True)
        cases = np.arange(first, first + count, dtype=np.uint32)
        key = _mix32_np(np.array([(self.seed_key + t * 0x632BE5AB) & _M32], np.uint32))
        self.keys = _mix32_np(key + cases)
        self.device = device
        self.calls = 0

    def hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        if self.keys is None:  # not a batch of predict's (start() was not called): no mask
            return output
        p = float(module.p)  # type: ignore[arg-type]
        if p <= 0.0:
            return output
        if p >= 1.0:
            return torch.zeros_like(output)
        # each dropout call of the forward pass gets its own stream (a layer used twice included)
        call_keys = _mix32_np(self.keys + np.uint32(((self.calls + 1) * 0x3C6EF372) & _M32))
        keys = torch.from_numpy(call_keys.view(np.int32)).to(self.device)
        self.calls += 1
        shape = tuple(output.shape)
        if isinstance(module, nn.Dropout):  # every element
            mask_shape = shape
        else:  # Dropout1d/2d/3d: whole channels, (B, C, 1, ...)
            mask_shape = (*shape[:2], *([1] * (output.dim() - 2)))
        size = int(np.prod(mask_shape[1:]))
        index = self._index.get((size, self.device))
        if index is None:
            index = torch.arange(size, dtype=torch.int32, device=self.device) * _to_int32(0x9E3779B9)
            self._index[(size, self.device)] = index
        keep = _case_uniform_bits(keys, size, index) >= round(p * (1 << 24))
        mask = keep.reshape(mask_shape).to(output.dtype) / (1.0 - p)
        return output * mask


@contextlib.contextmanager
def _case_dropout(model: nn.Module, seed: int, active: bool) -> Iterator[_CaseMasks]:
    """Hooks that apply per-case seeded dropout to ``model``'s dropout layers (none when not
    ``active``); call ``.start(...)`` before each forward pass. Hooks are removed on exit."""
    masks = _CaseMasks(seed, active)
    handles = [m.register_forward_hook(masks.hook) for m in _dropout_modules(model)] if active else []
    try:
        yield masks
    finally:
        for handle in handles:
            handle.remove()


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


def _provenance(
    model: nn.Module | None,
    run: LoadedRun | None,
    dataset: ImageDataset,
    seed: int,
    record: dict[str, Any],
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """The artifact's provenance: versions, dataset, seed, sampling, and the run (its record when
    the model came with one, else the module's class name)."""
    prov = with_version({"dataset": dataset.provenance, "seed": int(seed), **record})
    if run is not None:
        prov["run"] = run.provenance()
    elif "runs" not in record:
        prov["run"] = {"model_class": type(model).__name__} if model is not None else None
    if extra:
        prov.update(extra)
    return prov


def _to_predictions(
    logits: np.ndarray, dataset: ImageDataset, kind: str | None, provenance: dict[str, Any], thumbnail_size: int | None
) -> Predictions:
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
