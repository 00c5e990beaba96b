"""One trainer for classification and segmentation, seeded, resumable and atomic.

:func:`train` is the recipe; each step lives in its own module:

- :mod:`~medsure.training.config` — :class:`TrainConfig`, the settings;
- :mod:`~medsure.training.environment` — device, bf16, threads, determinism, RNG isolation;
- :mod:`~medsure.training.state` — what ``checkpoint.pt`` holds and how a run resumes exactly;
- :mod:`~medsure.training.loop` — one epoch of training, one validation pass;
- :mod:`~medsure.training.checkpoint` — atomic writes, ``weights_only=True`` reads;
- :mod:`~medsure.training.run` — the run record (``config.json``) and :class:`LoadedRun`.

A run folder holds

- ``config.json``   everything needed to rebuild the model and the data splits;
- ``checkpoint.pt`` the state after the last finished epoch (model, optimizer, epoch, RNG states,
  early-stopping counters, history) — ``resume=True`` continues from it and reaches exactly the
  weights an uninterrupted run reaches;
- ``best.pt``       the weights with the best validation metric (used by :func:`load_run`);
- ``history.json``  per-epoch losses and validation metrics (for training-curve plots).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsure.data.base import ImageDataset
from medsure.data.joint import joint_labels
from medsure.models import task_of
from medsure.training.checkpoint import save_best
from medsure.training.config import TrainConfig
from medsure.training.distributed import SINGLE_PROCESS, DistContext, context, rank_batches
from medsure.training.environment import (
    default_bf16,
    default_channels_last,
    isolated_run,
    resolve_device,
    torch_threads,
)
from medsure.training.loop import (
    Augmentation,
    Compute,
    cosine_lr,
    epoch_batches,
    images_to_tensor,
    train_epoch,
    validate_epoch,
)
from medsure.training.losses import LossFn, balanced_class_weight, make_loss, resolve_loss_name
from medsure.training.run import LoadedRun, build_from_record, model_from_checkpoint, read_record, run_record
from medsure.training.state import RandomStreams, RunState, check_run_folder, restore_run_state, save_run_state
from medsure.utils.io import write_json
from medsure.utils.progress import progress
from medsure.validation import input_error

__all__ = ["TrainConfig", "TrainResult", "train", "validate_epoch", "torch_threads", "resolve_device"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    run : the trained model with the best validation weights (eval mode, CPU) and its run record;
        hand it to :func:`medsure.predict.predict` whole
    best_epoch, best_metric : epoch (1-based) and value of the monitored metric
    stopped_early : True when patience ran out before ``epochs``
    """

    run: LoadedRun
    best_epoch: int
    best_metric: float
    stopped_early: bool

    @property
    def model(self) -> torch.nn.Module:
        return self.run.model

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per-epoch records (also in ``history.json``)."""
        return self.run.history

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir


@dataclass(frozen=True)
class _Plan:
    """The settings of :class:`TrainConfig` resolved for one task, dataset and machine."""

    task: str
    compute: Compute
    loss_fn: LossFn
    monitor: str
    augment: Augmentation | None

    @property
    def higher_is_better(self) -> bool:
        return self.monitor != "loss"


def train(
    config: TrainConfig,
    datasets: dict[str, ImageDataset],
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a model on ``datasets["train"]``, early-stopping on ``datasets["val"]``.

    Parameters
    ----------
    config : TrainConfig
    datasets : dict with "train" and "val" :class:`ImageDataset` (other keys are ignored)
    out_dir : run folder (created). Refused when it already holds a run and ``resume`` is False.
    resume : continue from ``out_dir/checkpoint.pt``; the result equals an uninterrupted run.
    on_epoch_end : called as ``f(epoch, record)`` after each epoch's checkpoint is written
        (an exception raised there stops training; the run stays resumable).

    Returns
    -------
    TrainResult
    """
    config.validate()
    train_ds, val_ds = check_datasets(datasets, task_of(config.model))
    plan = plan_run(config, train_ds, val_ds)
    out_dir = Path(out_dir)
    ctx = context(plan.compute.device)  # torchrun: this process's rank (medsure.training.distributed)
    if ctx.enabled and plan.task == "joint":
        raise input_error("processes", ctx.world_size, "1 for a joint (uml) run", "run it without torchrun", raw=True)
    record = run_record(
        config, train_ds, environment={**_environment_record(config, plan), "processes": ctx.world_size}
    )
    resuming = check_run_folder(out_dir, record, resume)
    ctx.barrier()  # every process checked the folder before process 0 writes to it
    out_dir.mkdir(parents=True, exist_ok=True)
    with isolated_run(plan.compute.device, num_threads=config.num_threads, strict_determinism=config.deterministic):
        torch.manual_seed(config.seed)  # dropout masks; the caller's state is restored after
        model, optimizer = _model_and_optimizer(record, config, plan.compute)
        streams = RandomStreams.from_seed(config.seed)
        if resuming:
            state = restore_run_state(out_dir / "checkpoint.pt", model, optimizer, streams, plan.compute.device)
        else:
            state = RunState()
            if ctx.is_main:
                write_json(out_dir / "config.json", record)
        train_xy = images_to_tensor(train_ds.images), torch.from_numpy(train_ds.targets)  # once, not per epoch
        if plan.task == "joint":  # joint models: the image labels travel beside the masks
            train_xy = (*train_xy, torch.from_numpy(joint_labels(train_ds)[0]))  # type: ignore[assignment]
        while not state.finished and state.epoch < config.epochs:
            entry = _run_epoch(
                state.epoch + 1, model, optimizer, streams, state, config, plan, train_xy, val_ds, out_dir, ctx=ctx
            )
            if on_epoch_end is not None:
                on_epoch_end(state.epoch, entry)
    # a run killed after its last checkpoint but before history.json resumes straight here
    if ctx.is_main:
        write_json(out_dir / "history.json", state.history)
    ctx.barrier()
    if state.best_epoch == 0:
        raise input_error(
            f"validation {plan.monitor}",
            "no finite value in any epoch",
            "a finite value at least once",
            "check the val split",
            raw=True,
        )
    saved = read_record(out_dir)
    run = LoadedRun(
        model=model_from_checkpoint(saved, out_dir / "best.pt"),
        config=saved,
        class_names=list(saved["class_names"]),
        task=saved["task"],
        history=state.history,
        run_dir=out_dir,
    )
    return TrainResult(
        run=run,
        best_epoch=state.best_epoch,
        best_metric=state.best_metric,
        stopped_early=state.stopped_early(config.epochs),
    )


def _run_epoch(
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    streams: RandomStreams,
    state: RunState,
    config: TrainConfig,
    plan: _Plan,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    val_ds: ImageDataset,
    out_dir: Path,
    *,
    ctx: DistContext = SINGLE_PROCESS,
) -> dict[str, Any]:
    """Train one epoch on ``train_xy`` (images ``(N, C, H, W)``, targets), validate on ``val_ds``,
    keep ``best.pt``, update ``state`` and checkpoint it. With several processes (``ctx``) each
    trains on its part of every batch and only process 0 writes.

    Returns the epoch's history record.
    """
    images, targets = train_xy[:2]
    started = time.perf_counter()
    if hasattr(plan.loss_fn, "on_epoch"):  # evidential losses anneal their KL term by epoch
        plan.loss_fn.on_epoch(epoch)
    lr = cosine_lr(config.lr, epoch, config.epochs)
    for group in optimizer.param_groups:
        group["lr"] = lr
    batches = rank_batches(epoch_batches(len(images), config.batch_size, streams.shuffle), ctx)
    bar = progress(batches, desc=f"epoch {epoch}/{config.epochs}")
    if plan.task == "joint":  # images, masks and image labels (medsure.training.joint)
        train_loss, val = _joint_pass(model, optimizer, streams, config, plan, train_xy, bar, val_ds)
    else:
        train_loss = train_epoch(
            ctx.wrap(model),
            optimizer,
            plan.loss_fn,
            images,
            targets,
            bar,
            task=plan.task,
            compute=plan.compute,
            augment=plan.augment,
            augment_generator=streams.augment,
            on_batch=lambda mean: bar.set_postfix(loss=f"{mean:.4f}"),
        )
        if ctx.enabled:  # the mean over every process's cases; one model state in every process
            seen = sum(len(b) for b in batches)
            train_loss = ctx.mean(train_loss * seen, seen)
            ctx.sync_buffers(model)
        val = validate_epoch(
            model, val_ds, loss_fn=plan.loss_fn, batch_size=max(config.batch_size, 64), compute=plan.compute
        )
    bar.set_postfix(loss=f"{train_loss:.4f}", **{f"val_{plan.monitor}": f"{val[plan.monitor]:.4f}"})
    bar.close()
    metric = val[plan.monitor]
    improved = state.improves(metric, plan.higher_is_better)
    if improved and ctx.is_main:
        save_best(out_dir / "best.pt", model, epoch=epoch, monitor=plan.monitor, metric=metric)
    entry = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        **{f"val_{k}": v for k, v in val.items()},
        "monitor": plan.monitor,
        "improved": improved,
        "seconds": round(time.perf_counter() - started, 3),
    }
    state.history.append(entry)
    state.end_epoch(epoch, metric, improved, patience=config.patience, epochs=config.epochs)
    if ctx.is_main:
        save_run_state(out_dir / "checkpoint.pt", state, model, optimizer, streams, plan.compute.device)
        write_json(out_dir / "history.json", state.history)
    ctx.barrier()  # the epoch's checkpoint is on disk before any process starts the next
    return entry


def _joint_pass(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    streams: RandomStreams,
    config: TrainConfig,
    plan: _Plan,
    train_xy: tuple[torch.Tensor, ...],
    bar: Any,
    val_ds: ImageDataset,
) -> tuple[float, dict[str, float]]:
    """One training epoch and one validation pass of a joint model (UML): the training loss and
    the validation metrics (``train_xy``: images, masks, image labels)."""
    from medsure.training.joint import joint_train_epoch, joint_validate_epoch

    images, masks, labels = train_xy
    loss_fn: Any = plan.loss_fn  # a UMLLoss (make_loss for task "joint")
    train_loss = joint_train_epoch(
        model,
        optimizer,
        loss_fn,
        images,
        masks,
        labels,
        bar,
        compute=plan.compute,
        augment=plan.augment,
        augment_generator=streams.augment,
        on_batch=lambda mean: bar.set_postfix(loss=f"{mean:.4f}"),
    )
    val = joint_validate_epoch(
        model, val_ds, loss_fn=loss_fn, batch_size=max(config.batch_size, 64), compute=plan.compute
    )
    return train_loss, val


# ---- the steps before the first epoch -------------------------------------------------------


def check_datasets(datasets: dict[str, ImageDataset], task: str) -> tuple[ImageDataset, ImageDataset]:
    """The train and val splits, checked: the model's task, labelled, >= 2 samples, same image
    shape and class names, square images."""
    for key in ("train", "val"):
        if key not in datasets:
            raise input_error("datasets", sorted(datasets), f"a '{key}' split among the keys")
    train_ds, val_ds = datasets["train"], datasets["val"]
    for key, ds in (("train", train_ds), ("val", val_ds)):
        if task == "joint":  # masks as targets, image labels in meta (medsure.data.joint)
            joint_labels(ds, f"split '{key}'")
        elif ds.task != task:
            raise input_error(f"split '{key}'", f"a {ds.task} dataset", f"{task}, the model's task", raw=True)
        if ds.targets is None:
            raise input_error(f"split '{key}'", "no targets", "labels or masks; training needs them", raw=True)
        if len(ds) < 2:
            raise input_error(f"split '{key}' size", len(ds), "at least 2 samples")
    if train_ds.images.shape[1:] != val_ds.images.shape[1:]:
        raise input_error(
            "val images",
            f"size and channels {val_ds.images.shape[1:]}",
            f"those of the train images {train_ds.images.shape[1:]}",
            raw=True,
        )
    if list(train_ds.class_names) != list(val_ds.class_names):
        raise input_error(
            "val class_names",
            [str(c) for c in val_ds.class_names],
            f"the train class_names {[str(c) for c in train_ds.class_names]}",
        )
    h, w = train_ds.image_size
    if h != w:
        raise input_error(
            "image size",
            f"{h}x{w}",
            "square images (medsure models expect them)",
            "load the dataset with image_size=...",
            raw=True,
        )
    return train_ds, val_ds


def plan_run(config: TrainConfig, train_ds: ImageDataset, val_ds: ImageDataset) -> _Plan:
    """Resolve the config's automatic choices: device defaults, loss, class weights, monitor."""
    task = "joint" if task_of(config.model) == "joint" else train_ds.task
    device = resolve_device(config.device)
    compute = Compute(
        device=device,
        bf16=default_bf16(device) if config.bf16 is None else bool(config.bf16),
        channels_last=(default_channels_last(device) if config.channels_last is None else bool(config.channels_last)),
    )
    class_weight = None
    if config.class_weights == "balanced":
        if task != "classification":
            raise input_error("class_weights", "'balanced' for segmentation", "classification only", raw=True)
        class_weight = balanced_class_weight(train_ds.require_targets("split 'train'"), len(train_ds.class_names))
    loss_fn = make_loss(
        task,
        resolve_loss_name(task, config.loss),
        class_weight,
        evidence=config.evidence,
        annealing_epochs=config.kl_annealing_epochs,
    )
    sigmas = config.noise_sigmas()
    noise = sigmas if any(s > 0 for s in sigmas) else ()  # all zero: off, no draws
    augment = (
        Augmentation(
            hflip=config.hflip and config.augment,
            vflip=config.vflip and config.augment,
            max_shift=config.max_shift if config.augment else 0.0,
            noise_sigma=noise,
        )
        if config.augment or noise  # noise applies even when flips and shifts are off
        else None
    )
    return _Plan(
        task=task, compute=compute, loss_fn=loss_fn, monitor=_monitor(config.monitor, task, val_ds), augment=augment
    )


def _monitor(monitor: str, task: str, val_ds: ImageDataset) -> str:
    """``"auto"``: Dice for segmentation; AUC for classification unless a class is missing from
    val (AUC is then undefined), accuracy there."""
    if monitor == "auto":
        if task == "joint":  # mean of the classification AUC (or accuracy) and the Dice
            return "joint"
        if task == "segmentation":
            return "dice"
        return "auc" if len(np.unique(val_ds.require_targets("split 'val'"))) == val_ds.n_classes else "accuracy"
    applies = {
        "classification": ("auc", "accuracy", "loss"),
        "segmentation": ("dice", "loss"),
        "joint": ("auc", "accuracy", "dice", "loss"),
    }[task]
    if monitor not in applies:
        raise input_error("monitor", monitor, f"a metric of {task}: one of {', '.join(applies)}")
    return monitor


def _environment_record(config: TrainConfig, plan: _Plan) -> dict[str, Any]:
    """How this run computes on this machine (recorded in ``config.json``, not compared on resume)."""
    return {
        "device": plan.compute.device.type,
        "bf16": plan.compute.bf16,
        "channels_last": plan.compute.channels_last,
        "deterministic": "strict" if config.deterministic else "warn_only",
        "num_threads": config.num_threads if config.num_threads is not None else torch.get_num_threads(),
    }


def _model_and_optimizer(
    record: dict[str, Any], config: TrainConfig, compute: Compute
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The untrained model (seeded weights) on its device, and its AdamW optimizer."""
    model = build_from_record(record, seed=config.seed).to(compute.device)
    if compute.channels_last:
        # Module.to accepts memory_format at runtime; torch's overloads for it do not declare it
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model, torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
