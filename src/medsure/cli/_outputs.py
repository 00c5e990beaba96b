"""Outputs of a command: every path checked before any computing, everything written at the end.

A command that fails half-way must leave nothing behind, and one that would fail on its last
output must fail before it spends minutes computing. A command therefore declares its outputs
first (:meth:`OutputPlan.file` / :meth:`OutputPlan.folder`), which checks each path at once, then
computes, then calls the writers it collected, in order, with :meth:`OutputPlan.write_all`.

A missing parent folder is created (documented in the README): ``--out results/run1/x.json``
works on a fresh checkout. A path that names an existing folder where a file is expected (or a
file where a folder is expected), or a parent that is a file, is an error naming the option.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from medsure.validation import input_error


def check_output_file(option: str, path: str | os.PathLike) -> Path:
    """Raise unless ``path`` can be written as a file (it may not exist yet)."""
    p = Path(path)
    if p.is_dir():
        raise input_error(
            option, f"'{p}', an existing folder", "a file path", f"name a file inside it, e.g. {p / 'result'}", raw=True
        )
    _check_parent(option, p)
    return p


def check_output_folder(option: str, path: str | os.PathLike) -> Path:
    """Raise unless ``path`` is an existing folder or can be created as one."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise input_error(
            option,
            f"'{p}', an existing file",
            "a folder (existing, or one to create)",
            "choose another name or move the file away",
            raw=True,
        )
    _check_parent(option, p)
    return p


def _check_parent(option: str, p: Path) -> None:
    """The nearest existing ancestor must be a writable folder (missing folders below it are created)."""
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise input_error(
                    option,
                    f"'{p}', whose parent '{parent}' is a file",
                    "a path whose parent folders exist or can be created",
                    raw=True,
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                raise input_error(
                    option, f"'{p}', inside the read-only folder '{parent}'", "a path in a writable folder", raw=True
                )
            return


@dataclass
class OutputPlan:
    """The outputs of one command run, checked up front and written together at the end.

    Example
    -------
    >>> plan = OutputPlan()
    >>> out = plan.file("--out", args.out)           # checked now, before any computing
    >>> result = evaluate_something(...)
    >>> plan.add(out, lambda path: write_result_json(path, result))
    >>> plan.write_all()                              # nothing is written before this line
    """

    _writers: list[tuple[Path, Callable[[Path], object]]] = field(default_factory=list)
    _declared: dict[Path, str] = field(default_factory=dict)

    # overloads: a path given comes back as a Path (never None), so callers need no None check
    @overload
    def file(self, option: str, path: str | os.PathLike) -> Path: ...
    @overload
    def file(self, option: str, path: None) -> None: ...
    def file(self, option: str, path: str | os.PathLike | None) -> Path | None:
        """Check ``path`` for option ``option`` now; return it (None passes through)."""
        return None if path is None else self._declare(option, check_output_file(option, path))

    @overload
    def folder(self, option: str, path: str | os.PathLike) -> Path: ...
    @overload
    def folder(self, option: str, path: None) -> None: ...
    def folder(self, option: str, path: str | os.PathLike | None) -> Path | None:
        """Check the output folder ``path`` for option ``option`` now; return it (None passes through)."""
        return None if path is None else self._declare(option, check_output_folder(option, path))

    def _declare(self, option: str, path: Path) -> Path:
        # two options naming one file would silently keep only the last one written
        key = path.absolute()
        if key in self._declared:
            raise input_error(
                option,
                f"'{path}', the path already given to {self._declared[key]}",
                "a different path for every output",
                raw=True,
            )
        self._declared[key] = option
        return path

    def add(self, path: Path | None, writer: Callable[[Path], object]) -> None:
        """Queue ``writer(path)``; it runs in :meth:`write_all` (its return value is ignored). A None path
        is skipped."""
        if path is not None:
            self._writers.append((path, writer))

    def write_all(self) -> None:
        """Run the queued writers in order. If one fails, the files (and folders) this call
        created are removed again, so a failed command leaves no partial set of outputs."""
        created: list[Path] = []
        try:
            for path, writer in self._writers:
                # noted before the writer runs: what it creates (the file, missing parent folders)
                created += [p for p in (path, *path.parents) if not p.exists()]
                writer(path)
        except BaseException:
            for p in created:  # each entry lists the path before its parents; only new paths
                if not p.exists():
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        p.unlink()
            raise
        finally:
            self._writers.clear()
