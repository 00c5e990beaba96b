"""Run state and resume: what ``checkpoint.pt`` holds, and how a killed run continues exactly.

After every epoch the trainer saves the model, the optimizer, the early-stopping counters, the
history and *every random stream* the run draws from (the global torch RNG that drives dropout,
the CUDA RNG, the shuffling and the augmentation generators). Restoring all of them puts the run
where it was, so a resumed run reaches bit for bit the weights an uninterrupted one reaches.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsure.training.checkpoint import CHECKPOINT_FORMAT, check_format, cpu_state, load_checkpoint, save_checkpoint
from medsure.training.config import TrainConfig
from medsure.utils.io import to_jsonable
from medsure.validation import input_error

# settings a resumed run may change: where it runs, not what it computes
_RESUME_MAY_CHANGE = ("device", "num_threads", "deterministic")


@dataclass
class RandomStreams:
    """The run's own generators (CPU): batch order and augmentation draws.

    Seeded from the run's seed (``seed + 1``, ``seed + 2``) so that they are independent of the
    global stream that initialises weights and draws dropout masks.
    """

    shuffle: torch.Generator
    augment: torch.Generator

    @classmethod
    def from_seed(cls, seed: int) -> RandomStreams:
        return cls(shuffle=torch.Generator().manual_seed(seed + 1), augment=torch.Generator().manual_seed(seed + 2))


@dataclass
class RunState:
    """Progress of a run and its early-stopping counters.

    Attributes
    ----------
    epoch : last finished epoch (0 before the first)
    best_epoch, best_metric : epoch (1-based; 0: none yet) and value of the best monitored metric
    bad_epochs : epochs since the last improvement
    finished : True once the epochs are done or patience ran out
    history : one record per finished epoch (what ``history.json`` holds)
    """

    epoch: int = 0
    best_epoch: int = 0
    best_metric: float = float("nan")
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def improves(self, metric: float, higher_is_better: bool) -> bool:
        """True when ``metric`` is finite and beats the best so far (any finite value beats none)."""
        if math.isnan(metric):
            return False
        if math.isnan(self.best_metric):
            return True
        return metric > self.best_metric if higher_is_better else metric < self.best_metric

    def end_epoch(self, epoch: int, metric: float, improved: bool, *, patience: int, epochs: int) -> None:
        """Count an improvement or a bad epoch; finish at the last epoch or when patience runs out."""
        self.epoch = epoch
        if improved:
            self.best_metric, self.best_epoch, self.bad_epochs = metric, epoch, 0
        else:
            self.bad_epochs += 1
        if patience and self.bad_epochs >= patience and epoch < epochs:
            self.finished = True
        if epoch >= epochs:
            self.finished = True

    def stopped_early(self, epochs: int) -> bool:
        """True when patience ended the run before its last epoch."""
        return self.finished and self.epoch < epochs


def check_run_folder(out_dir: Path, record: dict[str, Any], resume: bool) -> bool:
    """Whether the run in ``out_dir`` is resumed; raise when a run is there without ``resume`` or
    when the requested run differs from the saved one (other data, model or settings)."""
    if not (out_dir / "checkpoint.pt").exists():
        return False
    if not resume:
        raise input_error(
            "run folder",
            str(out_dir),
            "a new folder, but it already holds a run",
            "pass resume=True (CLI: --resume) to continue it or choose a new --out folder",
        )
    saved = json.loads((out_dir / "config.json").read_text())
    if isinstance(saved.get("train"), dict):
        # a setting added to TrainConfig after the run started is recorded at its default: the run
        # computed exactly what that default computes, so it is no reason to refuse the resume
        saved["train"] = {**_train_defaults(), **saved["train"]}
    mismatch = [
        k
        for k in ("task", "class_names", "model", "train")
        if json.dumps(_comparable(saved.get(k)), sort_keys=True)
        != json.dumps(_comparable(to_jsonable(record[k])), sort_keys=True)
    ]
    if mismatch:
        raise input_error(
            f"cannot resume '{out_dir}'",
            f"a request that differs in {mismatch}",
            "the settings of its config.json",
            raw=True,
        )
    return True


def _train_defaults() -> dict[str, Any]:
    """TrainConfig's default values, as JSON (fields without a default are left out)."""
    out: dict[str, Any] = {}
    for f in fields(TrainConfig):
        if f.default is not MISSING:
            out[f.name] = to_jsonable(f.default)
        elif f.default_factory is not MISSING:
            out[f.name] = to_jsonable(f.default_factory())
    return out


def _comparable(section: Any) -> Any:
    """A config section without the settings that may change between a run and its resume."""
    if isinstance(section, dict):
        return {k: v for k, v in section.items() if k not in _RESUME_MAY_CHANGE}
    return section


def save_run_state(
    path: Path,
    state: RunState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    streams: RandomStreams,
    device: torch.device,
) -> None:
    """Write ``checkpoint.pt`` (atomically): everything :func:`restore_run_state` needs."""
    rng = {
        "torch": torch.get_rng_state(),
        "shuffle": streams.shuffle.get_state(),
        "augment": streams.augment.get_state(),
    }
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state()
    save_checkpoint(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": state.epoch,
            "model": cpu_state(model),
            "optimizer": optimizer.state_dict(),
            "rng": rng,
            "best_epoch": state.best_epoch,
            "best_metric": state.best_metric,
            "bad_epochs": state.bad_epochs,
            "finished": state.finished,
            "history": state.history,
        },
    )


def restore_run_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, streams: RandomStreams, device: torch.device
) -> RunState:
    """Load ``checkpoint.pt`` into ``model``, ``optimizer``, ``streams`` and the global torch RNG
    (CPU, and CUDA when the run is on a GPU); return the counters and history."""
    saved = check_format(path, load_checkpoint(path))
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["rng"]["torch"])
    if device.type == "cuda" and "cuda" in saved["rng"]:
        torch.cuda.set_rng_state(saved["rng"]["cuda"])
    streams.shuffle.set_state(saved["rng"]["shuffle"])
    streams.augment.set_state(saved["rng"]["augment"])
    return RunState(
        epoch=int(saved["epoch"]),
        best_epoch=int(saved["best_epoch"]),
        best_metric=float(saved["best_metric"]),
        bad_epochs=int(saved["bad_epochs"]),
        finished=bool(saved["finished"]),
        history=list(saved["history"]),
    )
