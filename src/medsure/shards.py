"""Sharded prediction sets: a folder of prediction files plus a manifest, read as a stream.

A prediction set too large for one file (or one machine's memory) is a **shard folder**::

    preds/
        manifest.json          # shard names, counts, SHA-256, class names, task, provenance
        shard-00000.npz        # each a complete prediction file (medsure.artifact.save_predictions)
        shard-00001.npz
        ...

Every shard is a valid prediction file on its own; the manifest ties them together and says
whether the set is complete. :class:`ShardWriter` writes the shards one at a time (each atomically,
the manifest rewritten atomically after each), so a killed run leaves only finished shards behind
and the next run skips them (:meth:`ShardWriter.is_done` checks each by its SHA-256).
:func:`iter_shards` reads a folder one shard at a time (streaming analyses keep one shard in
memory); :func:`medsure.artifact.load_predictions` accepts a shard folder and concatenates it.

Errors name the folder and the shard: a missing or corrupt shard, a shard changed after the
manifest was written (its hash differs), shards that disagree with the manifest on the task, K or
class names, an unfinished folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medsure import artifact as _artifact
from medsure.artifact import Predictions, load_predictions, save_predictions
from medsure.errors import MedsureError
from medsure.utils.io import atomic_write_text, to_jsonable, with_version
from medsure.validation import check_int, describe, input_error

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "ShardEntry",
    "ShardSource",
    "ShardWriter",
    "concat_predictions",
    "is_shard_folder",
    "iter_shards",
    "load_sharded",
    "read_manifest",
    "shard_name",
    "shard_ranges",
    "sha256_of",
    "shards_of",
    "write_shard_file",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "medsure-shards"
MANIFEST_VERSION = 1
_HASH_CHUNK = 1 << 20


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard-00012.npz``)."""
    return f"shard-{int(index):05d}.npz"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in consecutive blocks of ``shard_size``."""
    check_int("shard_size", shard_size, low=1)
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks (memory stays flat)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_shard_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a shard manifest."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST_NAME).is_file()


@dataclass(frozen=True)
class ShardEntry:
    """One shard of the manifest: its index, file name, number of cases and SHA-256."""

    index: int
    name: str
    n: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "n": self.n, "sha256": self.sha256}


@dataclass(frozen=True)
class Manifest:
    """The manifest of a shard folder.

    Attributes
    ----------
    task : "classification" or "segmentation"
    class_names : list of str, length K
    shards : list of ShardEntry, in index order (finished shards only while incomplete)
    n_shards : int, the number of shards of the whole set (None when not known in advance)
    complete : bool, True once every shard is written
    provenance : dict, what made the set (run, seed, shard size...)
    """

    task: str
    class_names: list[str]
    shards: list[ShardEntry] = field(default_factory=list)
    n_shards: int | None = None
    complete: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_total(self) -> int:
        """Cases over the shards listed."""
        return sum(s.n for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "task": self.task,
            "class_names": list(self.class_names),
            "n_classes": len(self.class_names),
            "n_shards": self.n_shards,
            "n_total": self.n_total,
            "complete": self.complete,
            "shards": [s.to_dict() for s in self.shards],
            "provenance": to_jsonable(with_version(self.provenance)),
        }


def _manifest_error(folder: Path, given: str, expected: str, hint: str | None = None) -> MedsureError:
    return input_error(f"shard manifest '{folder / MANIFEST_NAME}'", given, expected, hint, raw=True)


def read_manifest(folder: str | os.PathLike, *, require_complete: bool = True) -> Manifest:
    """Read and check the manifest of the shard folder ``folder``.

    Raises
    ------
    MedsureInputError
        No manifest, invalid JSON or fields, or (``require_complete``) an unfinished folder.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise input_error(
            "shard folder",
            f"'{folder}', without {MANIFEST_NAME}",
            "a folder written by medsure predict --shard-size (shards plus manifest.json)",
            raw=True,
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _manifest_error(folder, f"unreadable JSON ({exc})", "a JSON manifest", "write the set again") from exc
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise _manifest_error(folder, "a JSON file of another kind", f"a manifest with format '{MANIFEST_FORMAT}'")
    version = raw.get("format_version")
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise _manifest_error(
            folder, f"format_version {describe(version)}", f"a version <= {MANIFEST_VERSION}", "upgrade medsure"
        )
    try:
        class_names = [str(c) for c in raw["class_names"]]
        shards = [
            ShardEntry(int(s["index"]), str(s["name"]), int(s["n"]), str(s["sha256"])) for s in raw.get("shards", [])
        ]
        manifest = Manifest(
            task=str(raw["task"]),
            class_names=class_names,
            shards=shards,
            n_shards=None if raw.get("n_shards") is None else int(raw["n_shards"]),
            complete=bool(raw.get("complete", False)),
            provenance=dict(raw.get("provenance") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _manifest_error(folder, f"a missing or invalid field ({exc})", "task, class_names and shards") from exc
    if int(raw.get("n_classes", len(class_names))) != len(class_names):
        raise _manifest_error(
            folder, f"n_classes {raw.get('n_classes')} and {len(class_names)} class names", "one name per class"
        )
    for entry in manifest.shards:
        # a name with a folder part would read outside the shard folder
        if Path(entry.name).name != entry.name or not entry.name.endswith(".npz"):
            raise _manifest_error(folder, f"shard name {entry.name!r}", "a plain .npz file name inside the folder")
    if require_complete and not manifest.complete:
        total = "?" if manifest.n_shards is None else str(manifest.n_shards)
        raise input_error(
            "shard folder",
            f"'{folder}', unfinished ({len(manifest.shards)} of {total} shards written)",
            "a complete prediction set",
            "run the same medsure predict command again: it resumes and skips finished shards",
            raw=True,
        )
    return manifest


def _check_shard(folder: Path, manifest: Manifest, entry: ShardEntry, pred: Predictions) -> None:
    """A loaded shard must agree with its manifest entry (count) and the manifest (task, classes)."""
    what = f"shard '{folder / entry.name}'"
    hint = "every shard of a set must come from the same model; write the set again"
    if pred.task != manifest.task:
        raise input_error(what, f"task {pred.task!r}", f"{manifest.task!r} like the manifest", hint, raw=True)
    names = [str(c) for c in pred.class_names]
    if len(names) != len(manifest.class_names):
        raise input_error(
            what, f"K={len(names)} classes", f"K={len(manifest.class_names)} like the manifest", hint, raw=True
        )
    if names != manifest.class_names:
        expected = f"{describe(manifest.class_names)} like the manifest"
        raise input_error(what, f"class_names {describe(names)}", expected, hint, raw=True)
    if pred.n_samples != entry.n:
        raise input_error(what, f"{pred.n_samples} cases", f"{entry.n} as the manifest lists", hint, raw=True)


def iter_shards(folder: str | os.PathLike, *, task: str | None = None, verify: bool = True) -> Iterator[Predictions]:
    """Yield the shards of ``folder`` one at a time, in order (one shard in memory at a time).

    Parameters
    ----------
    folder : a shard folder (see the module docstring); a plain prediction file is yielded whole
    task : part of a joint file to read (as :func:`medsure.artifact.load_predictions`)
    verify : check every shard's SHA-256 against the manifest before loading it

    Raises
    ------
    MedsureInputError
        Naming the shard: missing, changed since the manifest was written, corrupt, or
        disagreeing with the manifest on task, K, class names or count.
    """
    path = Path(folder)
    if not path.is_dir():  # a plain prediction file: one shard
        yield load_predictions(path, task=task)  # type: ignore[arg-type]
        return
    manifest = read_manifest(path)
    for entry in manifest.shards:
        yield _load_entry(path, manifest, entry, task=task, verify=verify)


def _load_entry(folder: Path, manifest: Manifest, entry: ShardEntry, *, task: str | None, verify: bool) -> Predictions:
    shard = folder / entry.name
    if not shard.is_file():
        raise input_error(
            f"shard '{shard}'",
            "missing",
            f"one of the {len(manifest.shards)} shards listed in {MANIFEST_NAME}",
            "copy the whole folder, or write the set again (medsure predict resumes)",
            raw=True,
        )
    if verify and sha256_of(shard) != entry.sha256:
        raise input_error(
            f"shard '{shard}'",
            "a file changed after the manifest was written (SHA-256 differs)",
            "the shard the manifest lists",
            "delete the shard and run medsure predict again to rewrite it",
            raw=True,
        )
    pred = load_predictions(shard, task=task)  # type: ignore[arg-type]  # a corrupt file is named there
    _check_shard(folder, manifest, entry, pred)
    return pred


#: A prediction set to stream: a shard folder or a prediction file (its path), or a function
#: returning a fresh iterable of :class:`Predictions` parts (called once per pass).
ShardSource = str | os.PathLike | Callable[[], Iterable[Predictions]]


def shards_of(source: ShardSource, *, task: str | None = None) -> Iterator[Predictions]:
    """A fresh pass over ``source``, one :class:`Predictions` part at a time (streaming analyses
    call it once per pass they need)."""
    if callable(source):
        return iter(source())
    return iter_shards(source, task=task)


def concat_predictions(parts: Sequence[Predictions]) -> Predictions:
    """One :class:`Predictions` from consecutive parts of the same set (shards), in order.

    Provenance, sample kind and evidential flag come from the first part; parts must agree on
    task, class names, sample axis and meta keys.
    """
    if not parts:
        raise input_error("prediction shards", "none", "at least one shard", raw=True)
    first = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        same = (
            part.task == first.task
            and [str(c) for c in part.class_names] == [str(c) for c in first.class_names]
            and part.has_samples == first.has_samples
            and part.logits.shape[: 1 if part.has_samples else 0] == first.logits.shape[: 1 if first.has_samples else 0]
            and part.logits.shape[-2 if part.task == "segmentation" else 2 :]
            == first.logits.shape[-2 if first.task == "segmentation" else 2 :]
            and sorted(part.meta) == sorted(first.meta)
            and (part.targets is None) == (first.targets is None)
            and (part.thumbnails is None) == (first.thumbnails is None)
            and part.evidential == first.evidential
        )
        if not same:
            raise input_error(
                f"prediction shard {i}",
                f"task {part.task!r}, logits {part.logits.shape}, meta {sorted(part.meta)}",
                f"the task, classes, sample axis, image size and keys of shard 0 (logits {first.logits.shape})",
                "every shard of a set must come from the same model and command",
                raw=True,
            )
    if len(parts) == 1:
        return first
    axis = 1 if first.has_samples else 0

    def cat(values: list[np.ndarray | None]) -> np.ndarray | None:
        return None if values[0] is None else np.concatenate([v for v in values if v is not None])

    return replace(
        first,
        logits=np.concatenate([p.logits for p in parts], axis=axis),
        ids=np.concatenate([p.ids for p in parts]),
        labels=cat([p.labels for p in parts]),
        masks=cat([p.masks for p in parts]),
        thumbnails=cat([p.thumbnails for p in parts]),
        meta={k: np.concatenate([p.meta[k] for p in parts]) for k in first.meta},
    )


def load_sharded(folder: str | os.PathLike, *, task: str | None = None, verify: bool = True) -> Predictions:
    """The whole shard folder as one :class:`Predictions` (needs memory for all of it; streaming
    analyses use :func:`iter_shards` instead)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    pred = concat_predictions(list(iter_shards(folder, task=task, verify=verify)))
    return replace(pred, provenance={**pred.provenance, "shards": {"folder": str(folder), "n": len(manifest.shards)}})


def write_shard_file(folder: str | os.PathLike, index: int, pred: Predictions) -> ShardEntry:
    """Write shard ``index`` of a set into ``folder`` (atomically) without touching the manifest;
    the process that owns the manifest records the returned entry (:meth:`ShardWriter.record`)."""
    path = Path(folder) / shard_name(index)
    save_predictions(path, pred)
    return ShardEntry(int(index), path.name, pred.n_samples, sha256_of(path))


class ShardWriter:
    """Write a prediction set as a shard folder, resumably.

    >>> writer = ShardWriter("preds", task="classification", class_names=names, n_shards=4)
    >>> for i, (start, stop) in enumerate(shard_ranges(n, 1000)):
    ...     if not writer.is_done(i):
    ...         writer.write(i, predict_rows(start, stop))
    >>> writer.finish()

    The manifest is rewritten (atomically) after every shard with ``complete: false`` until
    :meth:`finish`. A folder written by another set (other task, classes, shard count or
    ``identity``) is refused rather than mixed.

    Parameters
    ----------
    folder : the shard folder (created when missing)
    task, class_names : of every shard
    n_shards : number of shards of the whole set
    provenance : stored in the manifest
    identity : what must match for a resume (e.g. run, split, seed, shard size); stored in the
        manifest's provenance under ``"identity"``
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        task: str,
        class_names: Sequence[str],
        n_shards: int,
        provenance: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.task = task
        self.class_names = [str(c) for c in class_names]
        self.n_shards = int(n_shards)
        self.identity = to_jsonable(dict(identity or {}))
        self.provenance = {**(provenance or {}), "identity": self.identity}
        self._entries: dict[int, ShardEntry] = {}
        if self.folder.exists() and not self.folder.is_dir():
            raise input_error("shard folder", f"'{self.folder}', an existing file", "a folder", raw=True)
        if (self.folder / MANIFEST_NAME).is_file():
            old = read_manifest(self.folder, require_complete=False)
            same = (
                old.task == self.task
                and old.class_names == self.class_names
                and old.n_shards == self.n_shards
                and old.provenance.get("identity") == self.identity
            )
            if not same:
                raise input_error(
                    "shard folder",
                    f"'{self.folder}', which holds another prediction set",
                    "an empty folder, or one written by this same command (to resume it)",
                    "choose another --out folder or delete this one",
                    raw=True,
                )
            self._entries = {e.index: e for e in old.shards}

    @property
    def manifest(self) -> Manifest:
        entries = [self._entries[i] for i in sorted(self._entries)]
        return Manifest(
            task=self.task,
            class_names=self.class_names,
            shards=entries,
            n_shards=self.n_shards,
            complete=len(entries) == self.n_shards,
            provenance=self.provenance,
        )

    def is_done(self, index: int) -> bool:
        """True when shard ``index`` is listed and its file is intact (same SHA-256)."""
        entry = self._entries.get(int(index))
        if entry is None:
            return False
        path = self.folder / entry.name
        if path.is_file() and sha256_of(path) == entry.sha256:
            return True
        del self._entries[int(index)]  # missing or changed: it is written again
        return False

    def write(self, index: int, pred: Predictions) -> ShardEntry:
        """Write shard ``index`` (atomically) and record it in the manifest."""
        check_int("shard index", index, low=0, high=self.n_shards - 1)
        if pred.task != self.task or [str(c) for c in pred.class_names] != self.class_names:
            raise input_error(
                f"shard {index}",
                f"task {pred.task!r} with classes {describe([str(c) for c in pred.class_names])}",
                f"task {self.task!r} with classes {describe(self.class_names)}",
                raw=True,
            )
        entry = write_shard_file(self.folder, index, pred)
        self._entries[int(index)] = entry
        self._write_manifest()
        return entry

    def record(self, entry: ShardEntry) -> None:
        """Record a shard written by another process (e.g. a Ray worker that called
        :func:`write_shard_file`); its file must be in the folder with the entry's SHA-256."""
        check_int("shard index", entry.index, low=0, high=self.n_shards - 1)
        path = self.folder / entry.name
        if entry.name != shard_name(entry.index) or not path.is_file() or sha256_of(path) != entry.sha256:
            raise input_error(
                f"shard '{path}'", "a missing file or another SHA-256", "the file the worker reported", raw=True
            )
        self._entries[entry.index] = entry
        self._write_manifest()

    def finish(self) -> Manifest:
        """Check every shard is written and mark the set complete; returns the manifest."""
        missing = [i for i in range(self.n_shards) if i not in self._entries]
        if missing:
            raise input_error(
                "shard folder",
                f"'{self.folder}' with shard(s) {missing[:5]} not written",
                f"all {self.n_shards} shards",
                raw=True,
            )
        self._write_manifest()
        return self.manifest

    def _write_manifest(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / MANIFEST_NAME, json.dumps(self.manifest.to_dict(), indent=1) + "\n")


if load_sharded not in _artifact._SHARD_FOLDER_READER:  # medsure.artifact.load_predictions reads folders with it
    _artifact._SHARD_FOLDER_READER.append(load_sharded)
