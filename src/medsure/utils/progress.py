"""Progress bars for every loop a person waits for."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    leave: bool = False,
    disable: bool | None = None,
    **kwargs,
) -> tqdm[T]:
    """A tqdm bar; silenced when ``MEDSURE_NO_PROGRESS=1`` (used by the test suite)."""
    if disable is None:
        disable = os.environ.get("MEDSURE_NO_PROGRESS", "") == "1"
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=disable, dynamic_ncols=True, **kwargs)
