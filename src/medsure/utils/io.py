"""Atomic file writes: write to a temporary file in the same folder, then rename.

A killed process therefore never leaves a half-written result behind. Every file a command writes
as its result records the medsure version that wrote it (:func:`with_version`, issue 17).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from medsure import __version__  # set before medsure/__init__ imports anything, so no cycle
from medsure.validation import input_error

#: The key under which results JSON files and prediction-file provenance record the medsure version.
VERSION_KEY = "medsure_version"


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; restore at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. A missing parent
    folder is created. Errors name ``path`` — never the hidden temporary file.
    """
    path = Path(path)
    if path.is_dir():
        raise input_error(
            "output file",
            f"'{path}', an existing folder",
            "a file path",
            f"name a file inside it, e.g. {path / 'result'}",
            raw=True,
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # a parent that is a file, a read-only folder...
        raise _naming(exc, path) from exc
    try:
        # text is UTF-8 whatever the locale (the HTML report declares utf-8 and holds α, ±, ≥)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the result the permissions a plain open() would
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        try:
            os.replace(tmp, path)
        except OSError as exc:  # e.g. a folder of that name appeared meanwhile
            raise _naming(exc, path) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """The same OS error, reported under the user's ``path`` instead of a temporary name."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays (recursively) to plain Python for ``json``.

    Non-finite floats become ``None`` so the output is strict JSON.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON, atomically."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def with_version(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with the running medsure version under :data:`VERSION_KEY` (first key).

    A version already in ``record`` is replaced: the stamp says which medsure wrote the file, so
    that ``medsure --version``, the installed package and every output file agree.
    """
    return {VERSION_KEY: __version__, **{k: v for k, v in record.items() if k != VERSION_KEY}}


def write_result_json(path: str | os.PathLike, result: Mapping[str, Any]) -> dict[str, Any]:
    """Write a command's JSON result (:func:`write_json`) stamped by :func:`with_version`.

    Every results JSON of a command (``--out`` of conformal, calibration, failure, segment-eval,
    conformal-mask; explain.json; the demo's results.json) goes through here. Returns what was
    written (``result`` is not modified).
    """
    stamped = with_version(result)
    write_json(path, stamped)
    return stamped
