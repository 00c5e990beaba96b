"""The run record (``config.json``) and a trained model that travels with it.

A run folder's ``config.json`` says what was trained on what: the model's architecture, the
class names, the training settings and the data's provenance. :func:`load_run` returns the model
*together with* that record as a :class:`LoadedRun`; whoever needs to know what a model was trained
on (``medsure predict`` checking a dataset, the artifact's provenance) is handed the
:class:`LoadedRun` explicitly — nothing is stored on the model object.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medsure.data.base import ImageDataset
from medsure.data.joint import joint_labels
from medsure.models import build_model, task_of
from medsure.training.checkpoint import load_checkpoint
from medsure.training.config import TrainConfig
from medsure.utils.io import with_version
from medsure.validation import check_choice, input_error


def run_record(
    config: TrainConfig, train_ds: ImageDataset, environment: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The content of ``config.json``: everything needed to rebuild the model and its data.

    Parameters
    ----------
    config : the run's settings (saved whole under ``"train"``)
    train_ds : the training split (task, class names, channels, image size, provenance)
    environment : the settings resolved for this machine (device, bf16, channels_last,
        deterministic mode); recorded, never compared on resume
    """
    record = with_version(  # the medsure version under the one key every output file uses
        {
            "torch_version": torch.__version__,
            "task": train_ds.task,
            "class_names": [str(c) for c in train_ds.class_names],
            "model": {
                "name": config.model,
                "in_channels": train_ds.in_channels,
                "num_classes": train_ds.n_classes,
                "image_size": train_ds.image_size[0],
                "dropout": float(config.dropout),
                "width": config.width,
            },
            "train": asdict(config),
            "data_provenance": train_ds.provenance,
        }
    )
    if environment is not None:
        record["environment"] = environment
    if task_of(config.model) == "joint":  # classes are the image classes; the masks' are beside them
        labels_names = joint_labels(train_ds, "split 'train'")[1]
        record["task"] = "joint"
        record["class_names"] = labels_names
        record["seg_class_names"] = [str(c) for c in train_ds.class_names]
        record["model"].update(num_classes=len(labels_names), num_seg_classes=train_ds.n_classes)
    if task_of(config.model) == "joint" or config.loss.startswith("evidential"):
        record["model"]["evidence"] = config.evidence  # the outputs are Dirichlet evidence
    return record


def build_from_record(record: dict[str, Any], seed: int = 0) -> nn.Module:
    """Untrained model described by a ``config.json`` record, initialised from ``seed``.

    The caller's global torch RNG state is left untouched.
    """
    spec = record["model"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(
            spec["name"],
            in_channels=int(spec["in_channels"]),
            num_classes=int(spec["num_classes"]),
            image_size=int(spec["image_size"]),
            dropout=float(spec["dropout"]),
            width=spec.get("width"),
            num_seg_classes=int(spec.get("num_seg_classes", 2)),
            evidence=str(spec.get("evidence", "softplus")),
        )


@dataclass
class LoadedRun:
    """A trained model and the run record it came from.

    Attributes
    ----------
    model : the network (best validation weights unless loaded otherwise), eval mode, CPU
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

    def check_fits(self, dataset: ImageDataset) -> None:
        """Raise unless ``dataset`` matches what the model was trained on: task, channels,
        image size, and class names in the same order."""
        spec = self.config["model"]
        if self.task == "joint":
            from dataclasses import replace

            from medsure.data.joint import CLASS_NAMES_KEY

            self._check_joint_masks(dataset)
            # the rest checks the image classes (an unlabelled set of images has none of its own)
            names = dataset.provenance.get(CLASS_NAMES_KEY, self.class_names)
            dataset = replace(dataset, task="classification", targets=None, class_names=np.asarray(names))
        elif self.task != dataset.task:
            raise input_error("dataset task", dataset.task, f"{self.task}, the task the model was trained for")
        if dataset.in_channels != spec["in_channels"]:
            raise input_error(
                "dataset channels", dataset.in_channels, f"{spec['in_channels']}, the channels the model was trained on"
            )
        side = int(spec["image_size"])
        if dataset.image_size != (side, side):
            raise input_error(
                "dataset image size",
                f"{dataset.image_size[0]}x{dataset.image_size[1]}",
                f"{side}x{side}, the size the model was trained at",
                f"load the dataset with image_size={side}",
                raw=True,
            )
        if len(dataset.class_names) != spec["num_classes"]:
            raise input_error(
                "dataset classes", len(dataset.class_names), f"{spec['num_classes']}, the model's number of classes"
            )
        names = [str(c) for c in dataset.class_names]
        if names != list(self.class_names):
            raise input_error(
                "dataset class names", names, f"{list(self.class_names)} (the model's names, in the same order)"
            )

    def _check_joint_masks(self, dataset: ImageDataset) -> None:
        names = [str(c) for c in dataset.class_names]
        if dataset.task != "segmentation" or names != list(self.config.get("seg_class_names", [])):
            raise input_error(
                "dataset",
                f"a {dataset.task} dataset with classes {names}",
                f"a joint dataset with masks of {self.config.get('seg_class_names')} (the joint model's)",
                raw=True,
            )

    @property
    def evidential(self) -> str | None:
        """The evidence function when the model's outputs are Dirichlet evidence (an evidential
        loss or a joint model), else None."""
        spec = self.config["model"]
        return str(spec["evidence"]) if "evidence" in spec else None

    def provenance(self) -> dict[str, Any]:
        """What a prediction artifact records about this run: its folder and its record
        without the (long) data provenance of the training split."""
        return {
            "run_dir": str(self.run_dir),
            "config": {k: v for k, v in self.config.items() if k != "data_provenance"},
        }


def read_record(run_dir: Path) -> dict[str, Any]:
    """``config.json`` of a run folder, checked for the keys a model is rebuilt from."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise input_error(
            "run folder", str(run_dir), "a folder with config.json", "is it a medsure run? (written by medsure train)"
        )
    try:
        record = json.loads(config_path.read_text(encoding="utf-8"))
        _ = record["model"], record["task"], record["class_names"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise input_error(
            f"run folder '{run_dir}': config.json",
            f"{type(exc).__name__}: {exc}",
            "a valid medsure run record",
            raw=True,
        ) from exc
    return record


def model_from_checkpoint(record: dict[str, Any], checkpoint: Path) -> nn.Module:
    """The model of ``record`` with the weights of ``checkpoint``, in eval mode on CPU."""
    state = load_checkpoint(checkpoint)
    model = build_from_record(record)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise input_error(
            f"weights in '{checkpoint}'",
            f"{type(exc).__name__}: {exc}",
            "weights that fit the model in config.json",
            raw=True,
        ) from exc
    return model.eval()


def load_run(run_dir: str | os.PathLike, *, weights: str = "best") -> LoadedRun:
    """Rebuild the model of a run from ``config.json`` and ``best.pt`` (or ``checkpoint.pt``).

    Parameters
    ----------
    run_dir : folder written by :func:`medsure.training.train`
    weights : "best" (best validation epoch) or "last" (last finished epoch)

    Returns
    -------
    LoadedRun
        the model and its run record; pass it whole to :func:`medsure.predict.predict` so the
        dataset is checked against the record and the artifact records the run.
    """
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    check_choice("weights", weights, ("best", "last"))
    model = model_from_checkpoint(record, run_dir / ("best.pt" if weights == "best" else "checkpoint.pt"))
    history_path = run_dir / "history.json"
    try:
        history = json.loads(history_path.read_text(encoding="utf-8")) if history_path.is_file() else []
    except json.JSONDecodeError as exc:
        raise input_error(f"run folder '{run_dir}': history.json", str(exc), "valid JSON", raw=True) from exc
    return LoadedRun(
        model=model,
        config=record,
        class_names=list(record["class_names"]),
        task=record["task"],
        history=history,
        run_dir=run_dir,
    )
