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
evidential models (format 2)
    ``alpha`` float ``> 0`` in place of ``logits``, same shapes: Dirichlet concentrations
    (Sensoy et al. 2018). Read as ``logits = log(alpha)``, so every analysis sees the expected
    probabilities ``softmax(log alpha) = alpha / sum(alpha)``; ``Predictions.alpha`` gives them back.
joint classification + segmentation (format 2, ``task="joint"``)
    one file for the same ``ids``: ``logits`` or ``alpha`` ``([T,] N, K)``, ``labels``,
    ``class_names`` (classification) and ``seg_logits`` or ``seg_alpha`` ``([T,] N, K_seg, H, W)``,
    ``masks``, ``seg_class_names`` (segmentation), plus the shared optional keys.
    :func:`load_predictions` returns its classification part (``task="segmentation"`` for the
    other), :func:`load_joint_predictions` both (:class:`JointPredictions`, ``.split()``).

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

from medsure.core import softmax  # re-exported: ``medsure.artifact.softmax`` keeps working
from medsure.errors import MedsureInputError
from medsure.utils.io import atomic_write, to_jsonable, with_version
from medsure.validation import describe, input_error

FORMAT_VERSION = 2  # 2 added ``alpha`` (evidential) and ``task="joint"``; plain files are still written as 1
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
    # True: ``logits`` hold log Dirichlet concentrations (an evidential model; saved as ``alpha``)
    evidential: bool = False

    def __post_init__(self) -> None:
        validate(self)

    @property
    def alpha(self) -> np.ndarray | None:
        """Dirichlet concentrations ``exp(logits)`` (float64, shape of ``logits``) of an evidential
        model; None otherwise."""
        return np.exp(self.logits.astype(np.float64)) if self.evidential else None

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

    def subset(self, index: np.ndarray) -> Predictions:
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

    def without_samples(self) -> Predictions:
        """Collapse the T axis to mean logits (for analyses that want one model output)."""
        if not self.has_samples:
            return self
        return replace(self, logits=self.mean_logits(), sample_kind=None)


# ---- validation ---------------------------------------------------------------------------


def _fail(key: str, given: Any, expected: str, hint: str | None = None, *, raw: bool = True) -> None:
    """Raise the one-format error for prediction key ``key``."""
    raise input_error(f"prediction key '{key}'", given, expected, hint, raw=raw)


def _shape_text(shape: tuple) -> str:
    return f"shape {tuple(int(s) for s in shape)}"


def validate(pred: Predictions) -> None:
    """Check shapes, dtypes, finiteness and label range; raise naming the offending key."""
    if pred.task not in ("classification", "segmentation"):
        _fail("task", pred.task, "'classification' or 'segmentation'", raw=False)
    logits = pred.logits
    if not isinstance(logits, np.ndarray) or not np.issubdtype(logits.dtype, np.floating):
        _fail("logits", f"{type(logits).__name__} of dtype {getattr(logits, 'dtype', None)}", "a floating-point array")
    base = 2 if pred.task == "classification" else 4
    if logits.ndim not in (base, base + 1):
        want = "(N, K) or (T, N, K)" if base == 2 else "(N, K, H, W) or (T, N, K, H, W)"
        _fail("logits", f"{_shape_text(logits.shape)} ({logits.ndim} axes)", f"shape {want} for {pred.task}")
    core = logits.shape[1:] if logits.ndim == base + 1 else logits.shape
    n, k = core[0], core[1]
    if logits.ndim == base + 1 and logits.shape[0] < 1:
        _fail("logits", f"{_shape_text(logits.shape)}, an empty sample axis T", "at least one sample (T >= 1)")
    if k < 2:
        _fail("logits", f"K={k} class{'es' if k != 1 else ''}", "at least 2 classes")
    finite = np.isfinite(logits)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        _fail(
            "logits",
            f"{bad} NaN or infinite value{'s' if bad != 1 else ''} (first at index {first})",
            "finite logits",
            "fix or drop those samples before writing the file",
        )
    if pred.ids.shape != (n,):
        _fail("ids", _shape_text(pred.ids.shape), f"shape ({n},), one id per sample of the logits")
    if len(set(pred.ids.tolist())) != n:
        values, counts = np.unique(pred.ids, return_counts=True)
        dup = values[counts > 1]
        _fail(
            "ids",
            f"{len(dup)} duplicated id{'s' if len(dup) != 1 else ''} (e.g. {describe(dup[0])})",
            "a unique id per sample",
        )
    if pred.class_names.shape != (k,):
        _fail("class_names", _shape_text(pred.class_names.shape), f"shape ({k},), one name per logit class (K={k})")
    if pred.task == "classification":
        if pred.masks is not None:
            _fail("masks", "masks in a classification artifact", "no 'masks' key (classification uses 'labels')")
        if pred.labels is not None:
            _check_int_range("labels", pred.labels, (n,), k)
    else:
        if pred.labels is not None:
            _fail("labels", "labels in a segmentation artifact", "no 'labels' key", "store the ground truth as 'masks'")
        if pred.masks is not None:
            _check_int_range("masks", pred.masks, (n, *core[2:]), k)
    if pred.thumbnails is not None:
        t = pred.thumbnails
        if t.dtype != np.uint8 or t.ndim not in (3, 4) or t.shape[0] != n:
            _fail("thumbnails", f"{_shape_text(t.shape)} of dtype {t.dtype}", f"uint8 of shape ({n}, h, w[, C])")
    for name, values in pred.meta.items():
        if np.shape(values) != (n,):
            _fail(_META_PREFIX + name, _shape_text(np.shape(values)), f"shape ({n},), one value per sample")
    if pred.sample_kind is not None and pred.sample_kind not in SAMPLE_KINDS:
        _fail("sample_kind", pred.sample_kind, "one of " + ", ".join(map(repr, SAMPLE_KINDS)), raw=False)


def _check_int_range(key: str, values: np.ndarray, shape: tuple, k: int) -> None:
    if not isinstance(values, np.ndarray) or not np.issubdtype(values.dtype, np.integer):
        _fail(key, f"dtype {getattr(values, 'dtype', type(values).__name__)}", "integer class indices")
    if values.shape != tuple(shape):
        _fail(key, _shape_text(values.shape), f"shape {tuple(int(s) for s in shape)} to match the logits")
    if values.size:
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= k:
            _fail(
                key,
                f"values in [{lo}, {hi}]",
                f"class indices in [0, {k - 1}] for K={k} classes",
                "check that the labels and the logits' class order come from the same model",
            )


# ---- construction from raw arrays ----------------------------------------------------------


def make_predictions(
    logits: Any,
    *,
    labels: Any = None,
    masks: Any = None,
    ids: Any = None,
    class_names: Any = None,
    task: Task | None = None,
    **kwargs: Any,
) -> Predictions:
    """Build a :class:`Predictions` from array-likes, filling default ids and class names.

    ``task`` is inferred when absent: masks given or logits with 4+ dims → segmentation.
    """
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.floating):
        _fail("logits", f"dtype {logits.dtype}", "floating-point logits")
    if task is not None and task not in ("classification", "segmentation"):
        _fail("task", task, "'classification' or 'segmentation'", raw=False)
    if task is None:
        if masks is not None or logits.ndim >= 4:
            task = "segmentation"
        else:
            task = "classification"
    base = 2 if task == "classification" else 4
    if logits.ndim not in (base, base + 1):
        want = "(N, K) or (T, N, K)" if base == 2 else "(N, K, H, W) or (T, N, K, H, W)"
        _fail("logits", _shape_text(logits.shape), f"shape {want} for {task}")
    core = logits.shape[1:] if logits.ndim == base + 1 else logits.shape
    n, k = core[0], core[1]
    ids = np.array([str(i) for i in range(n)]) if ids is None else np.asarray(ids).astype(str)
    class_names = (
        np.array([f"class_{j}" for j in range(k)]) if class_names is None else np.asarray(class_names).astype(str)
    )
    labels = None if labels is None else _as_int64("labels", labels)
    masks = None if masks is None else _as_int64("masks", masks)
    if task == "classification" and logits.dtype != np.float32:
        logits = logits.astype(np.float32)
    return Predictions(task=task, logits=logits, ids=ids, class_names=class_names, labels=labels, masks=masks, **kwargs)


def _as_int64(key: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim >= 1 and arr.shape[-1] == 1 and key == "labels" and arr.ndim == 2:
        arr = arr[:, 0]  # MedMNIST stores labels as (N, 1)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            _fail(key, f"{int(arr.size - np.count_nonzero(finite))} NaN or infinite value(s)", "integer class indices")
        if not np.all(arr == np.round(arr)):
            _fail(
                key, f"non-integer values (e.g. {describe(arr[arr != np.round(arr)].flat[0])})", "integer class indices"
            )
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        _fail(key, f"dtype {arr.dtype}", "integer class indices")
    return arr.astype(np.int64)


# ---- I/O --------------------------------------------------------------------------------


def save_predictions(path: str | os.PathLike, pred: Predictions, *, compress: bool = True) -> Path:
    """Write ``pred`` to ``path`` (``.npz``) atomically. Returns the path written.

    The stored provenance records the medsure version that wrote the file under
    ``"medsure_version"`` (:func:`medsure.utils.io.with_version`); ``pred`` itself is not changed.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(FORMAT_VERSION),
        "task": np.array(pred.task),
        "logits": pred.logits,
        "ids": pred.ids.astype(str),
        "class_names": pred.class_names.astype(str),
        "provenance": np.array(json.dumps(to_jsonable(with_version(pred.provenance)))),
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
        column = np.asarray(values)
        arrays[_META_PREFIX + name] = column.astype(str) if column.dtype == object else column
    if pred.evidential:
        del arrays["logits"]
        arrays["alpha"] = _alpha_to_store(pred)
        arrays["format_version"] = np.array(FORMAT_VERSION)
    else:
        arrays["format_version"] = np.array(1)  # readable by every medsure since format 1
    _write_npz(path, arrays, compress)
    return path


def _alpha_to_store(pred: Predictions) -> np.ndarray:
    # classification alpha in float32; segmentation maps keep the logits' (float16) precision
    return np.exp(pred.logits.astype(np.float64)).astype(np.float32 if pred.task == "classification" else np.float16)


def _write_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool) -> None:
    saver = np.savez_compressed if compress else np.savez
    with atomic_write(path, "wb") as handle:
        saver(handle, allow_pickle=False, **arrays)  # load_predictions refuses pickled arrays anyway


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip member, or an empty zip archive
_NPY_MAGIC = b"\x93NUMPY"
_EXPECTED_FILE = "a .npz archive (numpy.savez) with at least the key 'logits'"


def _open_npz(path: Path) -> Any:
    """Open ``path`` as an ``.npz``; every way it can fail names the file and what it really is."""
    what = "prediction file"
    if not path.exists():
        raise input_error(
            what,
            f"'{path}', which does not exist",
            _EXPECTED_FILE,
            "check the path (relative paths start at the current folder)",
            raw=True,
        )
    if path.is_dir():
        raise input_error(what, f"'{path}', a folder", _EXPECTED_FILE, "name the .npz file inside it", raw=True)
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as exc:
        raise input_error(
            what, f"'{path}', which cannot be opened ({exc.strerror or exc})", _EXPECTED_FILE, raw=True
        ) from exc
    if not head:
        raise input_error(
            what,
            f"'{path}', an empty file (0 bytes)",
            _EXPECTED_FILE,
            "the file was probably cut off while being written; write it again",
            raw=True,
        )
    if head.startswith(_NPY_MAGIC):
        raise input_error(
            what,
            f"'{path}', a single .npy array",
            _EXPECTED_FILE,
            "save with np.savez(path, logits=..., labels=...)",
            raw=True,
        )
    if not head.startswith(_ZIP_MAGIC):
        raise input_error(
            what,
            f"'{path}', which is not a zip archive (starts with {head[:4]!r})",
            _EXPECTED_FILE,
            "save with np.savez(path, logits=..., labels=...)",
            raw=True,
        )
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise input_error(
            what,
            f"'{path}', a damaged or truncated zip archive ({exc})",
            _EXPECTED_FILE,
            "write the file again",
            raw=True,
        ) from exc


#: The reader of shard folders: medsure.shards (which builds on this module) registers
#: ``load_sharded`` here when the medsure package is imported, so this module needs no import of it.
_SHARD_FOLDER_READER: list[Any] = []


def load_predictions(path: str | os.PathLike, *, task: Task | None = None) -> Predictions:
    """Read and validate a prediction file. Errors name the file and the offending key.

    ``task`` picks a part of a joint file ("classification", the default, or "segmentation");
    a single-task file is returned as it is (the analysis that reads it names a wrong task).
    A shard folder (:mod:`medsure.shards`, a folder with ``manifest.json``) is read whole.
    """
    path = Path(path)
    if path.is_dir() and (path / "manifest.json").is_file() and _SHARD_FOLDER_READER:
        return _SHARD_FOLDER_READER[0](path, task=task)  # medsure.shards.load_sharded
    arrays = _read_arrays(path)
    try:
        if _is_joint(arrays):
            joint = _joint_from_arrays(arrays)
            return joint.segmentation if task == "segmentation" else joint.classification
        return _from_arrays(arrays)
    except MedsureInputError as exc:
        raise _in_file(exc, path) from exc


def _in_file(exc: MedsureInputError, path: Path) -> MedsureInputError:
    # The message is already in the one format (built by input_error); only its <what> gains the
    # file: "prediction key 'labels': got ..." -> "prediction file 'cal.npz', key 'labels': got ..."
    message = str(exc).removeprefix("prediction ")
    return type(exc)(f"prediction file '{path}', {message}")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``; an unreadable key is named."""
    data = _open_npz(path)
    arrays = {}
    with data:
        for key in data.files:  # one key at a time, so an unreadable one is named
            try:
                arrays[key] = data[key]
            except ValueError as exc:
                if "allow_pickle" not in str(exc):
                    raise input_error(
                        f"prediction file '{path}', key '{key}'",
                        f"an unreadable array ({exc})",
                        "a numpy array",
                        "write the file again",
                        raw=True,
                    ) from exc
                raise input_error(
                    f"prediction file '{path}', key '{key}'",
                    "an array of Python objects",
                    "numbers or strings (object arrays are refused: loading them would run pickled code)",
                    "convert it, e.g. np.asarray(x, dtype=str)",
                    raw=True,
                ) from exc
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                # a CRC mismatch or a cut-off member: the bytes on disk are damaged
                raise input_error(
                    f"prediction file '{path}', key '{key}'",
                    f"damaged data ({exc})",
                    "an intact array",
                    "the file is corrupt or truncated; write it again",
                    raw=True,
                ) from exc
    return arrays


def _logits_from_alpha(key: str, alpha: np.ndarray) -> np.ndarray:
    """``log(alpha)``, refusing anything but finite floats > 0 with one message naming ``key``."""
    if not np.issubdtype(alpha.dtype, np.floating):
        _fail(key, f"dtype {alpha.dtype}", "floating-point Dirichlet concentrations")
    bad = ~np.isfinite(alpha) | (alpha <= 0)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        _fail(
            key,
            f"{int(bad.sum())} value(s) <= 0 or not finite (first {describe(float(alpha[first]))} at index {first})",
            "Dirichlet concentrations alpha > 0",
            "an evidential model gives alpha = evidence + 1 >= 1; store plain scores as 'logits'",
        )
    return np.log(alpha.astype(np.float32 if alpha.dtype == np.float64 else alpha.dtype))


def _from_arrays(arrays: dict[str, np.ndarray]) -> Predictions:
    if "alpha" in arrays:
        if "logits" in arrays:
            _fail("alpha", "both 'alpha' and 'logits'", "one of them", "an evidential file stores only 'alpha'")
        arrays = {**arrays, "logits": _logits_from_alpha("alpha", arrays["alpha"])}
    if "logits" not in arrays:
        found = ", ".join(f"'{k}'" for k in sorted(arrays))
        raise input_error(
            "prediction keys",
            f"only {found}" if found else "no keys",
            "at least the key 'logits'",
            "save with np.savez(path, logits=..., labels=...)",
            raw=True,
        )
    raw_version = arrays.get("format_version", np.array(FORMAT_VERSION))
    if raw_version.shape != () or not np.issubdtype(raw_version.dtype, np.integer):
        _fail("format_version", f"{_shape_text(raw_version.shape)} of dtype {raw_version.dtype}", "an integer scalar")
    version = int(raw_version)
    if version > FORMAT_VERSION:
        _fail(
            "format_version",
            version,
            f"a version <= {FORMAT_VERSION}",
            "the file was written by a newer medsure; upgrade medsure to read it",
        )
    task = str(arrays["task"]) if "task" in arrays else None
    provenance: Any = {}
    if "provenance" in arrays:
        try:
            provenance = json.loads(str(arrays["provenance"]))
        except json.JSONDecodeError as exc:
            _fail("provenance", f"invalid JSON ({exc})", "a JSON object string")
        if not isinstance(provenance, dict):
            _fail("provenance", f"a JSON {type(provenance).__name__}", "a JSON object")
    meta = {k[len(_META_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_META_PREFIX)}
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
        evidential="alpha" in arrays,
    )


def check_compatible(a: Predictions, b: Predictions, names: tuple[str, str] = ("cal", "test")) -> None:
    """Raise when two artifacts cannot be analysed together (task, K or class names differ)."""
    hint = "both files must come from the same model"
    if a.task != b.task:
        raise input_error(f"{names[1]} task", b.task, f"{a.task!r} like {names[0]}", hint)
    if a.n_classes != b.n_classes:
        raise input_error(f"{names[1]} classes", f"K={b.n_classes}", f"K={a.n_classes} like {names[0]}", hint, raw=True)
    if a.evidential != b.evidential:  # Dirichlet alpha and softmax logits are not one model's outputs
        kinds = {True: "Dirichlet alpha", False: "logits"}
        raise input_error(
            f"{names[1]} outputs", kinds[b.evidential], f"{kinds[a.evidential]} like {names[0]}", hint, raw=True
        )
    if list(a.class_names) != list(b.class_names):
        # plain strings: describe() renders numpy str_ as 'name', never np.str_('name')
        raise input_error(
            f"{names[1]} class_names",
            describe([str(c) for c in b.class_names]),
            f"{describe([str(c) for c in a.class_names])} like {names[0]}",
            hint,
            raw=True,
        )


# ---- joint classification + segmentation files (format 2) ------------------------------------

_SEG_PREFIX = "seg_"
_SHARED_KEYS = ("format_version", "task", "ids", "thumbnails", "sample_kind", "provenance")


@dataclass(frozen=True)
class JointPredictions:
    """Classification and segmentation predictions for the same cases (a joint model's output).

    Attributes
    ----------
    classification : task "classification": logits or alpha ``([T,] N, K)``, labels
    segmentation : task "segmentation": logits or alpha ``([T,] N, K_seg, H, W)``, masks; the
        same ids in the same order as ``classification`` (meta, thumbnails, sample kind and
        provenance are shared and stored once)
    """

    classification: Predictions
    segmentation: Predictions

    def __post_init__(self) -> None:
        cls, seg = self.classification, self.segmentation
        if cls.task != "classification":
            _fail("task", f"a {cls.task} part as classification", "a classification part", raw=True)
        if seg.task != "segmentation":
            _fail("task", f"a {seg.task} part as segmentation", "a segmentation part", raw=True)
        if cls.ids.shape != seg.ids.shape or not np.array_equal(cls.ids, seg.ids):
            _fail(
                "ids",
                f"{cls.n_samples} classification and {seg.n_samples} segmentation ids that differ",
                "the same ids in the same order for both tasks",
            )
        if cls.has_samples != seg.has_samples or (cls.has_samples and cls.logits.shape[0] != seg.logits.shape[0]):
            _fail(
                "seg_logits",
                f"sample axes of {cls.logits.shape[:-2]} and {seg.logits.shape[:-4]}",
                "the same T axis (or none) for both tasks",
            )

    @property
    def ids(self) -> np.ndarray:
        return self.classification.ids

    def split(self) -> tuple[Predictions, Predictions]:
        """The two single-task predictions ``(classification, segmentation)``, each a complete
        artifact that every analysis accepts."""
        return self.classification, self.segmentation

    def subset(self, index: np.ndarray) -> JointPredictions:
        return JointPredictions(self.classification.subset(index), self.segmentation.subset(index))


def save_joint_predictions(path: str | os.PathLike, joint: JointPredictions, *, compress: bool = True) -> Path:
    """Write ``joint`` to one ``.npz`` (``task="joint"``) atomically; returns the path."""
    path = Path(path)
    cls, seg = joint.split()
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(FORMAT_VERSION),
        "task": np.array("joint"),
        "ids": cls.ids.astype(str),
        "class_names": cls.class_names.astype(str),
        "seg_class_names": seg.class_names.astype(str),
        "provenance": np.array(json.dumps(to_jsonable(with_version(cls.provenance)))),
    }
    for prefix, part in (("", cls), (_SEG_PREFIX, seg)):
        if part.evidential:
            arrays[prefix + "alpha"] = _alpha_to_store(part)
        else:
            arrays[prefix + "logits"] = part.logits
    if cls.labels is not None:
        arrays["labels"] = cls.labels
    if seg.masks is not None:
        arrays["masks"] = seg.masks.astype(np.uint8 if seg.n_classes <= 255 else np.int64)
    thumbnails = cls.thumbnails if cls.thumbnails is not None else seg.thumbnails
    if thumbnails is not None:
        arrays["thumbnails"] = thumbnails
    if cls.sample_kind is not None:
        arrays["sample_kind"] = np.array(cls.sample_kind)
    for name, values in {**seg.meta, **cls.meta}.items():
        column = np.asarray(values)
        arrays[_META_PREFIX + name] = column.astype(str) if column.dtype == object else column
    _write_npz(path, arrays, compress)
    return path


def load_joint_predictions(path: str | os.PathLike) -> JointPredictions:
    """Read and validate a joint prediction file (``task="joint"``); errors name file and key."""
    path = Path(path)
    arrays = _read_arrays(path)
    try:
        if not _is_joint(arrays):
            task = str(arrays["task"]) if "task" in arrays else "single-task"
            raise input_error(
                "prediction key 'task'",
                f"'{task}'",
                "'joint' (a file with both classification and segmentation)",
                "write it with medsure predict on a joint (uml) run, or load it with load_predictions",
                raw=True,
            )
        return _joint_from_arrays(arrays)
    except MedsureInputError as exc:
        raise _in_file(exc, path) from exc


def _is_joint(arrays: dict[str, np.ndarray]) -> bool:
    return "task" in arrays and arrays["task"].shape == () and str(arrays["task"]) == "joint"


def _joint_from_arrays(arrays: dict[str, np.ndarray]) -> JointPredictions:
    """Both parts of a joint file: each is read like a single-task file from its own keys."""
    has_seg = any(k in arrays for k in ("seg_logits", "seg_alpha"))
    if not has_seg or not any(k in arrays for k in ("logits", "alpha")):
        missing = "'seg_logits' or 'seg_alpha'" if not has_seg else "'logits' or 'alpha'"
        _fail("task", "'joint' without " + missing, "both tasks' outputs in a joint file", raw=True)
    shared = {k: v for k, v in arrays.items() if k in _SHARED_KEYS or k.startswith(_META_PREFIX)}
    cls_arrays = {**shared, "task": np.array("classification")}
    for key in ("logits", "alpha", "labels", "class_names"):
        if key in arrays:
            cls_arrays[key] = arrays[key]
    seg_arrays = {**shared, "task": np.array("segmentation")}
    for key in ("logits", "alpha", "class_names"):
        if _SEG_PREFIX + key in arrays:
            seg_arrays[key] = arrays[_SEG_PREFIX + key]
    if "masks" in arrays:
        seg_arrays["masks"] = arrays["masks"]
    try:
        segmentation = _from_arrays(seg_arrays)
    except MedsureInputError as exc:  # name the joint file's own keys: 'logits' -> 'seg_logits'
        message = str(exc)
        for key in ("logits", "alpha", "class_names"):
            message = message.replace(f"key '{key}'", f"key '{_SEG_PREFIX}{key}'")
        raise type(exc)(message) from exc
    return JointPredictions(_from_arrays(cls_arrays), segmentation)
