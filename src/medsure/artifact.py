"""The prediction artifact: the only road from a model to every analysis.

A versioned ``.npz`` file that medsure writes from its own models and that any user can write
from theirs with plain numpy::

    np.savez("cal.npz", logits=logits, labels=labels, ids=ids, class_names=class_names)

Keys
----
classification
    ``logits`` float32 ``(N, K)``, or ``(T, N, K)`` for T MC-dropout samples / ensemble members /
    TTA views; ``labels`` int64 ``(N,)`` (optional for unlabelled data); ``ids`` str ``(N,)``;
    ``class_names`` str ``(K,)``.
segmentation
    ``logits`` float16/float32 ``(N, K, H, W)`` or ``(T, N, K, H, W)``; ``masks`` int ``(N, H, W)``
    (optional for unlabelled data); ``ids``; ``class_names``.
optional, both tasks
    ``format_version`` (int, default 1), ``task`` (``"classification"`` | ``"segmentation"``,
    inferred from the shapes when absent), ``thumbnails`` uint8 ``(N, h, w)`` or ``(N, h, w, C)``
    for galleries, ``meta__<name>`` arrays ``(N,)`` (e.g. ``meta__sex``) for group analyses,
    ``sample_kind`` str (``"mc_dropout"``, ``"ensemble"``, ``"tta"``) describing the T axis,
    ``provenance`` a JSON string (data source, MD5 check, model run, seed).

Loading validates shapes, finiteness and label range and names the offending key in the error.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medsure.errors import MedsureInputError
from medsure.utils.io import atomic_write, to_jsonable

FORMAT_VERSION = 1
Task = Literal["classification", "segmentation"]
SAMPLE_KINDS = ("mc_dropout", "ensemble", "tta", "samples")
_META_PREFIX = "meta__"


@dataclass(frozen=True)
class Predictions:
    """Model outputs plus ground truth for one split.

    Attributes
    ----------
    task : "classification" or "segmentation"
    logits : ndarray
        classification ``(N, K)`` or ``(T, N, K)``; segmentation ``(N, K, H, W)`` or
        ``(T, N, K, H, W)``.
    ids : ndarray of str, shape (N,)
    class_names : ndarray of str, shape (K,)
    labels : ndarray of int64, shape (N,), or None (classification only)
    masks : ndarray of int, shape (N, H, W), or None (segmentation only)
    thumbnails : ndarray of uint8, shape (N, h, w[, C]), or None
    meta : dict of str to ndarray (N,)
        Per-sample covariates (sex, age band, site...) for group-conditional analyses.
    sample_kind : str or None
        What the leading T axis holds, when present.
    provenance : dict
        JSON-serialisable record of where these predictions came from.
    """

    task: Task
    logits: np.ndarray
    ids: np.ndarray
    class_names: np.ndarray
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    thumbnails: np.ndarray | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    sample_kind: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)

    # ---- shape helpers -------------------------------------------------------------------
    @property
    def has_samples(self) -> bool:
        """True when logits carry a leading T axis (MC dropout, ensemble, TTA)."""
        base = 2 if self.task == "classification" else 4
        return self.logits.ndim == base + 1

    @property
    def n_samples(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.class_names.shape[0])

    @property
    def targets(self) -> np.ndarray | None:
        """``labels`` for classification, ``masks`` for segmentation."""
        return self.labels if self.task == "classification" else self.masks

    def sample_logits(self) -> np.ndarray:
        """Logits with a leading T axis always present (T=1 when there are no samples)."""
        return self.logits if self.has_samples else self.logits[None]

    def probabilities(self) -> np.ndarray:
        """Predictive probabilities, float32: mean over T of the per-sample softmax.

        Shape ``(N, K)`` or ``(N, K, H, W)``. For a single model this is the softmax of the logits.
        """
        return self.sample_probabilities().mean(axis=0)

    def sample_probabilities(self) -> np.ndarray:
        """Per-sample softmax, shape ``(T, N, K[, H, W])`` (T=1 without samples)."""
        return softmax(self.sample_logits().astype(np.float32, copy=False), axis=2)

    def mean_logits(self) -> np.ndarray:
        """Logits averaged over T (identity without samples), float32."""
        return self.sample_logits().astype(np.float32, copy=False).mean(axis=0)

    def subset(self, index: np.ndarray) -> "Predictions":
        """The rows ``index`` (an integer array or boolean mask over N); arrays are copied."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        logits = self.logits[:, index] if self.has_samples else self.logits[index]
        return replace(
            self,
            logits=logits,
            ids=self.ids[index],
            labels=None if self.labels is None else self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            thumbnails=None if self.thumbnails is None else self.thumbnails[index],
            meta={k: v[index] for k, v in self.meta.items()},
        )

    def without_samples(self) -> "Predictions":
        """Collapse the T axis to mean logits (for analyses that want one model output)."""
        if not self.has_samples:
            return self
        return replace(self, logits=self.mean_logits(), sample_kind=None)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (does not modify ``x``)."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


# ---- validation ---------------------------------------------------------------------------

def _fail(key: str, message: str) -> None:
    raise MedsureInputError(f"prediction key '{key}': {message}")


def validate(pred: Predictions) -> None:
    """Check shapes, dtypes, finiteness and label range; raise naming the offending key."""
    if pred.task not in ("classification", "segmentation"):
        _fail("task", f"got {pred.task!r}, expected 'classification' or 'segmentation'")
    logits = pred.logits
    if not isinstance(logits, np.ndarray) or not np.issubdtype(logits.dtype, np.floating):
        _fail("logits", f"expected a float array, got {type(logits).__name__} "
                        f"of dtype {getattr(logits, 'dtype', None)}")
    base = 2 if pred.task == "classification" else 4
    if logits.ndim not in (base, base + 1):
        want = "(N, K) or (T, N, K)" if base == 2 else "(N, K, H, W) or (T, N, K, H, W)"
        _fail("logits", f"shape {logits.shape} has {logits.ndim} dims, expected {want}")
    core = logits.shape[1:] if logits.ndim == base + 1 else logits.shape
    n, k = core[0], core[1]
    if logits.ndim == base + 1 and logits.shape[0] < 1:
        _fail("logits", "the sample axis T is empty")
    if k < 2:
        _fail("logits", f"has K={k} classes, expected at least 2")
    if not np.all(np.isfinite(logits)):
        bad = int(np.size(logits) - np.count_nonzero(np.isfinite(logits)))
        _fail("logits", f"contains {bad} NaN or infinite values; all logits must be finite")
    if pred.ids.shape != (n,):
        _fail("ids", f"shape {pred.ids.shape}, expected ({n},) to match logits")
    if len(set(pred.ids.tolist())) != n:
        _fail("ids", "contains duplicates; every sample needs a unique id")
    if pred.class_names.shape != (k,):
        _fail("class_names", f"shape {pred.class_names.shape}, expected ({k},) to match logits K={k}")
    if pred.task == "classification":
        if pred.masks is not None:
            _fail("masks", "given for a classification artifact")
        if pred.labels is not None:
            _check_int_range("labels", pred.labels, (n,), k)
    else:
        if pred.labels is not None:
            _fail("labels", "given for a segmentation artifact (use 'masks')")
        if pred.masks is not None:
            _check_int_range("masks", pred.masks, (n, *core[2:]), k)
    if pred.thumbnails is not None:
        t = pred.thumbnails
        if t.dtype != np.uint8 or t.ndim not in (3, 4) or t.shape[0] != n:
            _fail("thumbnails", f"shape {t.shape} dtype {t.dtype}, expected uint8 (N={n}, h, w[, C])")
    for name, values in pred.meta.items():
        if np.shape(values) != (n,):
            _fail(_META_PREFIX + name, f"shape {np.shape(values)}, expected ({n},)")
    if pred.sample_kind is not None and pred.sample_kind not in SAMPLE_KINDS:
        _fail("sample_kind", f"got {pred.sample_kind!r}, expected one of {SAMPLE_KINDS}")


def _check_int_range(key: str, values: np.ndarray, shape: tuple, k: int) -> None:
    if not isinstance(values, np.ndarray) or not np.issubdtype(values.dtype, np.integer):
        _fail(key, f"dtype {getattr(values, 'dtype', type(values).__name__)}, expected integers")
    if values.shape != tuple(shape):
        _fail(key, f"shape {values.shape}, expected {tuple(shape)} to match logits")
    if values.size:
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= k:
            _fail(key, f"values span [{lo}, {hi}], expected labels in [0, {k}) for K={k} classes")


# ---- construction from raw arrays ----------------------------------------------------------

def make_predictions(logits: Any, *, labels: Any = None, masks: Any = None, ids: Any = None,
                     class_names: Any = None, task: Task | None = None, **kwargs: Any) -> Predictions:
    """Build a :class:`Predictions` from array-likes, filling default ids and class names.

    ``task`` is inferred when absent: masks given or logits with 4+ dims → segmentation.
    """
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.floating):
        _fail("logits", f"dtype {logits.dtype}, expected float")
    if task is None:
        if masks is not None or logits.ndim >= 4:
            task = "segmentation"
        else:
            task = "classification"
    base = 2 if task == "classification" else 4
    if logits.ndim not in (base, base + 1):
        want = "(N, K) or (T, N, K)" if base == 2 else "(N, K, H, W) or (T, N, K, H, W)"
        _fail("logits", f"shape {logits.shape}, expected {want} for {task}")
    core = logits.shape[1:] if logits.ndim == base + 1 else logits.shape
    n, k = core[0], core[1]
    ids = np.array([str(i) for i in range(n)]) if ids is None else np.asarray(ids).astype(str)
    class_names = (np.array([f"class_{j}" for j in range(k)]) if class_names is None
                   else np.asarray(class_names).astype(str))
    labels = None if labels is None else _as_int64("labels", labels)
    masks = None if masks is None else _as_int64("masks", masks)
    if task == "classification" and logits.dtype != np.float32:
        logits = logits.astype(np.float32)
    return Predictions(task=task, logits=logits, ids=ids, class_names=class_names,
                       labels=labels, masks=masks, **kwargs)


def _as_int64(key: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim >= 1 and arr.shape[-1] == 1 and key == "labels" and arr.ndim == 2:
        arr = arr[:, 0]  # MedMNIST stores labels as (N, 1)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            _fail(key, "contains non-integer or non-finite values, expected integer class indices")
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        _fail(key, f"dtype {arr.dtype}, expected integers")
    return arr.astype(np.int64)


# ---- I/O --------------------------------------------------------------------------------

def save_predictions(path: str | os.PathLike, pred: Predictions, *, compress: bool = True) -> Path:
    """Write ``pred`` to ``path`` (``.npz``) atomically. Returns the path written."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(FORMAT_VERSION),
        "task": np.array(pred.task),
        "logits": pred.logits,
        "ids": pred.ids.astype(str),
        "class_names": pred.class_names.astype(str),
        "provenance": np.array(json.dumps(to_jsonable(pred.provenance))),
    }
    if pred.labels is not None:
        arrays["labels"] = pred.labels
    if pred.masks is not None:
        arrays["masks"] = pred.masks.astype(np.uint8 if pred.n_classes <= 255 else np.int64)
    if pred.thumbnails is not None:
        arrays["thumbnails"] = pred.thumbnails
    if pred.sample_kind is not None:
        arrays["sample_kind"] = np.array(pred.sample_kind)
    for name, values in pred.meta.items():
        values = np.asarray(values)
        arrays[_META_PREFIX + name] = values.astype(str) if values.dtype == object else values
    saver = np.savez_compressed if compress else np.savez
    with atomic_write(path, "wb") as handle:
        saver(handle, **arrays)
    return path


def load_predictions(path: str | os.PathLike) -> Predictions:
    """Read and validate a prediction file. Errors name the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise MedsureInputError(f"prediction file '{path}' does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise MedsureInputError(f"prediction file '{path}' is not a readable .npz archive: {exc}") from exc
    arrays = {}
    with data:
        for key in data.files:  # one key at a time, so an unreadable one is named
            try:
                arrays[key] = data[key]
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise MedsureInputError(f"prediction file '{path}': key '{key}' cannot be read without "
                                        f"unpickling (object arrays are refused): {exc}") from exc
    try:
        return _from_arrays(arrays)
    except MedsureInputError as exc:
        raise MedsureInputError(f"{path}: {exc}") from exc


def _from_arrays(arrays: dict[str, np.ndarray]) -> Predictions:
    if "logits" not in arrays:
        raise MedsureInputError(f"missing key 'logits' (found keys: {sorted(arrays)})")
    raw_version = arrays.get("format_version", np.array(FORMAT_VERSION))
    if raw_version.shape != () or not np.issubdtype(raw_version.dtype, np.integer):
        _fail("format_version", f"is {raw_version!r}, expected an integer scalar")
    version = int(raw_version)
    if version > FORMAT_VERSION:
        _fail("format_version", f"is {version}, this medsure reads versions up to {FORMAT_VERSION}")
    task = str(arrays["task"]) if "task" in arrays else None
    provenance: Any = {}
    if "provenance" in arrays:
        try:
            provenance = json.loads(str(arrays["provenance"]))
        except json.JSONDecodeError as exc:
            _fail("provenance", f"is not valid JSON ({exc})")
        if not isinstance(provenance, dict):
            _fail("provenance", f"is a JSON {type(provenance).__name__}, expected an object")
    meta = {k[len(_META_PREFIX):]: v for k, v in arrays.items() if k.startswith(_META_PREFIX)}
    return make_predictions(
        arrays["logits"],
        labels=arrays.get("labels"),
        masks=arrays.get("masks"),
        ids=arrays.get("ids"),
        class_names=arrays.get("class_names"),
        task=task,  # type: ignore[arg-type]
        thumbnails=arrays.get("thumbnails"),
        meta=meta,
        sample_kind=str(arrays["sample_kind"]) if "sample_kind" in arrays else None,
        provenance=provenance,
    )


def check_compatible(a: Predictions, b: Predictions, names: tuple[str, str] = ("cal", "test")) -> None:
    """Raise when two artifacts cannot be analysed together (task or K differ)."""
    if a.task != b.task:
        raise MedsureInputError(f"{names[0]} is {a.task} but {names[1]} is {b.task}")
    if a.n_classes != b.n_classes:
        raise MedsureInputError(
            f"{names[0]} has K={a.n_classes} classes but {names[1]} has K={b.n_classes}; "
            "both files must come from the same model")
    if list(a.class_names) != list(b.class_names):
        raise MedsureInputError(
            f"class_names differ: {names[0]} {list(a.class_names)} vs {names[1]} {list(b.class_names)}")
