"""Checkpoints hold only tensors and plain Python values and are read with ``weights_only=True``.

A checkpoint that needs arbitrary pickled objects (classes, functions) to load is refused:
unpickling it could run code from whoever wrote the file. Every write is atomic (temporary file,
then rename), so a run killed at any moment leaves the previous checkpoint intact.

A run folder holds two checkpoints (format :data:`CHECKPOINT_FORMAT`):

- ``checkpoint.pt`` — the full run state after the last finished epoch (see
  :mod:`medsure.training.state`);
- ``best.pt`` — ``{"format", "epoch", "monitor", "metric", "model"}``: the weights of the epoch
  with the best validation metric.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsure.utils.io import atomic_write
from medsure.validation import input_error

CHECKPOINT_FORMAT = 1


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
    what = f"checkpoint '{path}'"
    if not path.is_file():
        raise input_error(
            what,
            "no such file",
            "the file a finished epoch of medsure train writes",
            "is the run folder complete? (train writes best.pt after its first epoch)",
            raw=True,
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise input_error(
            what,
            f"pickled Python objects other than tensors and plain types ({_reason(exc)})",
            "tensors and plain types only",
            "refusing to load it because unpickling can run arbitrary code (torch.load weights_only=True)",
            raw=True,
        ) from exc
    except Exception as exc:  # any other failure means the file is not a torch checkpoint
        first = str(exc).split(". ")[0].strip().splitlines()[0] if str(exc).strip() else ""
        raise input_error(
            what,
            f"a file torch cannot read ({type(exc).__name__}: {first})",
            "a torch checkpoint written by medsure train",
            raw=True,
        ) from exc
    if not isinstance(state, dict):
        raise input_error(what, f"a {type(state).__name__}", "a dict", raw=True)
    return state


def check_format(path: str | os.PathLike, state: dict[str, Any]) -> dict[str, Any]:
    """Return ``state`` if it was written in :data:`CHECKPOINT_FORMAT`; raise otherwise."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise input_error(
            f"checkpoint '{path}' format",
            state.get("format"),
            str(CHECKPOINT_FORMAT),
            "it was written by another medsure version",
        )
    return state


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model.state_dict()`` (contiguous tensors, detached from the model)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_best(path: str | os.PathLike, model: nn.Module, *, epoch: int, monitor: str, metric: float) -> None:
    """Write ``best.pt``: the weights of ``model`` and the epoch and metric that made them best."""
    save_checkpoint(
        path,
        {"format": CHECKPOINT_FORMAT, "epoch": epoch, "monitor": monitor, "metric": metric, "model": cpu_state(model)},
    )
