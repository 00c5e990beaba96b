"""Reading a finished (or interrupted) run folder back."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from medsure.errors import MedsureInputError
from medsure.training.checkpoint import load_checkpoint
from medsure.training.trainer import build_from_record


@dataclass
class LoadedRun:
    """A model rebuilt from a run folder.

    Attributes
    ----------
    model : the network with the best validation weights, eval mode, CPU
    config : the ``config.json`` record (``config["train"]`` holds the TrainConfig values,
        ``config["train"]["dataset"]`` the dataset name/options/split seed)
    class_names : list of str
    task : "classification" or "segmentation"
    history : per-epoch records from ``history.json`` (empty when absent)
    run_dir : Path
    """

    model: nn.Module
    config: dict[str, Any]
    class_names: list[str]
    task: str
    history: list[dict[str, Any]]
    run_dir: Path


def load_run(run_dir: str | os.PathLike, *, weights: str = "best") -> LoadedRun:
    """Rebuild the model of a run from ``config.json`` and ``best.pt`` (or ``checkpoint.pt``).

    Parameters
    ----------
    run_dir : folder written by :func:`medsure.training.train`
    weights : "best" (best validation epoch) or "last" (last finished epoch)
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise MedsureInputError(f"run folder '{run_dir}' has no config.json; is it a medsure run?")
    if weights not in ("best", "last"):
        raise MedsureInputError(f"weights={weights!r}, expected 'best' or 'last'")
    try:
        record = json.loads(config_path.read_text(encoding="utf-8"))
        _ = record["model"], record["task"], record["class_names"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise MedsureInputError(f"run folder '{run_dir}': config.json is not a valid medsure run record "
                                f"({type(exc).__name__}: {exc})") from exc
    state = load_checkpoint(run_dir / ("best.pt" if weights == "best" else "checkpoint.pt"))
    model = build_from_record(record)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise MedsureInputError(f"weights in '{run_dir}' do not fit the model in config.json: "
                                f"{exc}") from exc
    model.eval()
    model.medsure_run = {"run_dir": str(run_dir), "config": record}
    history_path = run_dir / "history.json"
    try:
        history = json.loads(history_path.read_text(encoding="utf-8")) if history_path.is_file() else []
    except json.JSONDecodeError as exc:
        raise MedsureInputError(f"run folder '{run_dir}': history.json is not valid JSON ({exc})") from exc
    return LoadedRun(model=model, config=record, class_names=list(record["class_names"]),
                     task=record["task"], history=history, run_dir=run_dir)
