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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from medsure.validation import input_error


def check_output_file(option: str, path: str | os.PathLike) -> Path:
    """Raise unless ``path`` can be written as a file (it may not exist yet)."""
    p = Path(path)
    if p.is_dir():
        raise input_error(option, str(p), "a file path, not a folder", f"name a file inside it, e.g. {p / 'result'}")
    _check_parent(option, p)
    return p


def check_output_folder(option: str, path: str | os.PathLike) -> Path:
    """Raise unless ``path`` is an existing folder or can be created as one."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise input_error(option, str(p), "a folder, but a file of that name exists")
    _check_parent(option, p)
    return p


def _check_parent(option: str, p: Path) -> None:
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise input_error(option, str(p), f"a path whose parent folders can be created, but {parent} is a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise input_error(option, str(p), f"a writable location, but {parent} is not writable")
            return


@dataclass
class OutputPlan:
    """The outputs of one command run, checked up front and written together at the end."""

    _writers: list[tuple[Path, Callable[[Path], None]]] = field(default_factory=list)

    def file(self, option: str, path: str | os.PathLike | None) -> Path | None:
        """Check ``path`` for option ``option`` now; return it (None passes through)."""
        return None if path is None else check_output_file(option, path)

    def folder(self, option: str, path: str | os.PathLike | None) -> Path | None:
        return None if path is None else check_output_folder(option, path)

    def add(self, path: Path | None, writer: Callable[[Path], None]) -> None:
        """Queue ``writer(path)``; it runs in :meth:`write_all`. A None path is skipped."""
        if path is not None:
            self._writers.append((path, writer))

    def write_all(self) -> None:
        for path, writer in self._writers:
            writer(path)
        self._writers.clear()
