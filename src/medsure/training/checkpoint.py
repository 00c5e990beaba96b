"""Checkpoints hold only tensors and plain Python values and are read with ``weights_only=True``.

A checkpoint that needs arbitrary pickled objects (classes, functions) to load is refused:
unpickling it could run code from whoever wrote the file.
"""
from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from medsure.errors import MedsureInputError
from medsure.utils.io import atomic_write


def _reason(exc: Exception) -> str:
    """The informative line of torch's weights-only error (it names the refused global)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    useful = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (useful or [line for line in lines if line] or [type(exc).__name__])[0]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temporary file + rename): a killed run never leaves half a file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Raises
    ------
    MedsureInputError
        When the file is missing, unreadable, or contains pickled code/objects beyond tensors
        and plain types (refused for safety).
    """
    path = Path(path)
    if not path.is_file():
        raise MedsureInputError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise MedsureInputError(
            f"checkpoint '{path}' contains pickled Python objects other than tensors and plain "
            f"types; refusing to load it because unpickling can run arbitrary code "
            f"(torch.load weights_only=True: {_reason(exc)})") from exc
    except Exception as exc:  # noqa: BLE001 — any other failure means the file is not a torch checkpoint
        raise MedsureInputError(f"checkpoint '{path}' is not a readable torch file: "
                                f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise MedsureInputError(f"checkpoint '{path}' holds a {type(state).__name__}, expected a dict")
    return state
