"""One trainer for classification and segmentation, seeded, resumable and atomic.

A run folder holds

- ``config.json``   everything needed to rebuild the model and the data splits;
- ``checkpoint.pt`` the state after the last finished epoch (model, optimizer, epoch, RNG states,
  early-stopping counters, history) — ``resume=True`` continues from it and reaches exactly the
  weights an uninterrupted run reaches;
- ``best.pt``       the weights with the best validation metric (used by :func:`load_run`);
- ``history.json``  per-epoch losses and validation metrics (for training-curve plots).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsure import __version__
from medsure.data.base import ImageDataset
from medsure.errors import MedsureInputError
from medsure.models import build_model, task_of
from medsure.training.augment import random_flip_shift
from medsure.training.checkpoint import load_checkpoint, save_checkpoint
from medsure.training.metrics import accuracy, auc, mean_dice
from medsure.utils.io import to_jsonable, write_json
from medsure.utils.progress import progress

CHECKPOINT_FORMAT = 1
CLASSIFICATION_LOSSES = ("ce",)
SEGMENTATION_LOSSES = ("ce", "dice", "ce_dice")


@dataclass
class TrainConfig:
    """Settings of one training run (all plain values, saved as ``config.json``).

    Attributes
    ----------
    model : "resnet18", "resnet50", "small_cnn" or "unet"
    epochs : maximal number of epochs
    batch_size, lr, weight_decay : optimisation (AdamW, cosine learning-rate decay)
    loss : "auto" (ce for classification, ce_dice for segmentation), "ce", "dice", "ce_dice"
    monitor : validation metric for early stopping and ``best.pt``: "auto" (AUC for
        classification — accuracy when a class is missing from val —, Dice for segmentation),
        "auc", "accuracy", "dice" or "loss"
    patience : stop after this many epochs without improvement (0: never stop early)
    seed : seeds weight init, shuffling, augmentation and dropout
    dropout : dropout probability in the model (> 0 enables MC dropout)
    width : base width for small_cnn / unet (None: model default)
    augment, hflip, vflip, max_shift : random flips and whole-pixel shifts (fraction of side)
    bf16 : bfloat16 autocast; None picks the measured default for the device (see
        ``benchmarks/train_speed.py``)
    channels_last : channels-last memory format; None picks the measured default
    device : "auto" (CUDA when present), "cpu" or "cuda"
    num_threads : CPU threads for this run (None: torch's setting). On a machine whose cores
        are shared with other jobs, 1 thread avoids thread-barrier stalls (measured ~10x faster
        per step there); results are deterministic for a fixed thread count
    dataset : free record of where the data came from (name, options, split seed), used by
        ``medsure predict`` to rebuild the same splits
    class_weights : None, or "balanced" (classification): cross-entropy weighted by
        ``n / (K n_k)`` from the training labels, so a rare class (e.g. melanoma) is not ignored
    """

    model: str = "small_cnn"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "auto"
    monitor: str = "auto"
    patience: int = 5
    seed: int = 0
    dropout: float = 0.0
    width: int | None = None
    augment: bool = True
    hflip: bool = True
    vflip: bool = False
    max_shift: float = 0.1
    bf16: bool | None = None
    channels_last: bool | None = None
    device: str = "auto"
    num_threads: int | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    class_weights: str | None = None

    def validate(self) -> None:
        from medsure.models import MODEL_NAMES

        if self.model not in MODEL_NAMES:
            raise MedsureInputError(f"model {self.model!r}, expected one of {MODEL_NAMES}")
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise MedsureInputError(f"{key}={value!r}, expected a positive integer")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise MedsureInputError(f"patience={self.patience!r}, expected an integer >= 0")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise MedsureInputError(f"lr={self.lr!r}, expected a positive number")
        if not 0 <= self.max_shift < 0.5:
            raise MedsureInputError(f"max_shift={self.max_shift!r}, expected a fraction in [0, 0.5)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise MedsureInputError(f"device={self.device!r}, expected 'auto', 'cpu' or 'cuda'")
        if self.class_weights not in (None, "balanced"):
            raise MedsureInputError(f"class_weights={self.class_weights!r}, expected None or 'balanced'")
        if self.monitor not in ("auto", "auc", "accuracy", "dice", "loss"):
            raise MedsureInputError(
                f"monitor={self.monitor!r}, expected 'auto', 'auc', 'accuracy', 'dice' or 'loss'")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MedsureInputError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    run_dir : the run folder
    model : the model with the best validation weights, eval mode, on CPU
    history : per-epoch records (also in ``history.json``)
    best_epoch, best_metric : epoch (1-based) and value of the monitored metric
    stopped_early : True when patience ran out before ``epochs``
    """

    run_dir: Path
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    best_metric: float
    stopped_early: bool


# ---- device defaults ------------------------------------------------------------------------

def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MedsureInputError("device='cuda' but torch sees no CUDA device")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX); Linux only."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_bf16(device: torch.device) -> bool:
    """bf16 autocast by default on CUDA with bf16 support and on CPUs with native bf16.

    Measured with benchmarks/train_speed.py on the project's CPU (AMD EPYC with AVX512-BF16):
    training throughput x1.3-1.8 (small CNN), x1.5 (U-Net), x1.9-2.1 (ResNets). CPUs without
    native bf16 emulate it slowly, so they stay in float32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def default_channels_last(device: torch.device) -> bool:
    """channels_last by default only on CUDA: on the project's CPU it sped up the small CNN but
    slowed ResNet-18 training (benchmarks/train_speed.py), so CPU runs keep NCHW."""
    return device.type == "cuda"


# ---- tensors from datasets ----------------------------------------------------------------

def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, C)`` uint8 or float32 → ``(N, C, H, W)`` tensor, dtype kept (cheap to hold)."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1)))


def to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 / 255; float tensors pass through (assumed already in [0, 1])."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(255.0)
    return batch.float()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (None: unchanged); restored after."""
    previous = torch.get_num_threads()
    if n is not None:
        if not isinstance(n, int) or n < 1:
            raise MedsureInputError(f"num_threads={n!r}, expected a positive integer or None")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def deterministic_mode(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training; the caller's global settings are restored after."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_cudnn = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.backends.cudnn.benchmark = previous_cudnn


# ---- losses -----------------------------------------------------------------------------

def make_loss(task: str, name: str, class_weight: torch.Tensor | None = None
              ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Loss ``f(logits, targets)``; segmentation losses use MONAI (softmax, one-hot targets).
    ``class_weight (K,)`` weights the classification cross-entropy."""
    if task == "classification":
        if name not in CLASSIFICATION_LOSSES:
            raise MedsureInputError(f"loss {name!r} for classification, expected one of "
                                    f"{CLASSIFICATION_LOSSES}")
        if class_weight is None:
            return F.cross_entropy
        return lambda logits, y: F.cross_entropy(logits, y, weight=class_weight.to(logits.device))
    if class_weight is not None:
        raise MedsureInputError("class_weights apply to classification only")
    if name not in SEGMENTATION_LOSSES:
        raise MedsureInputError(f"loss {name!r} for segmentation, expected one of {SEGMENTATION_LOSSES}")
    if name == "ce":
        return F.cross_entropy
    from monai.losses import DiceCELoss, DiceLoss

    monai_loss = (DiceLoss(softmax=True, to_onehot_y=True) if name == "dice"
                  else DiceCELoss(softmax=True, to_onehot_y=True))

    def loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return monai_loss(logits, masks[:, None])

    return loss


# ---- the trainer ----------------------------------------------------------------------------

def _check_datasets(datasets: dict[str, ImageDataset], task: str) -> tuple[ImageDataset, ImageDataset]:
    for key in ("train", "val"):
        if key not in datasets:
            raise MedsureInputError(f"datasets lacks the '{key}' split (got {sorted(datasets)})")
    train_ds, val_ds = datasets["train"], datasets["val"]
    for key, ds in (("train", train_ds), ("val", val_ds)):
        if ds.task != task:
            raise MedsureInputError(f"split '{key}' is a {ds.task} dataset but the model does {task}")
        if ds.targets is None:
            raise MedsureInputError(f"split '{key}' has no targets; training needs labels")
        if len(ds) < 2:
            raise MedsureInputError(f"split '{key}' has {len(ds)} samples, expected at least 2")
    if train_ds.images.shape[1:] != val_ds.images.shape[1:]:
        raise MedsureInputError(f"train images {train_ds.images.shape[1:]} and val images "
                                f"{val_ds.images.shape[1:]} differ in size or channels")
    if list(train_ds.class_names) != list(val_ds.class_names):
        raise MedsureInputError("train and val class_names differ")
    h, w = train_ds.image_size
    if h != w:
        raise MedsureInputError(f"images are {h}x{w}; medsure models expect square images "
                                "(load the dataset with image_size=...)")
    return train_ds, val_ds


def run_record(config: TrainConfig, train_ds: ImageDataset) -> dict[str, Any]:
    """The content of ``config.json``."""
    return {
        "medsure_version": __version__,
        "torch_version": torch.__version__,
        "task": train_ds.task,
        "class_names": [str(c) for c in train_ds.class_names],
        "model": {"name": config.model, "in_channels": train_ds.in_channels,
                  "num_classes": train_ds.n_classes, "image_size": train_ds.image_size[0],
                  "dropout": float(config.dropout), "width": config.width},
        "train": asdict(config),
        "data_provenance": train_ds.provenance,
    }


def build_from_record(record: dict[str, Any], seed: int = 0) -> nn.Module:
    """Untrained model described by a ``config.json`` record, initialised from ``seed``.

    The caller's global torch RNG state is left untouched.
    """
    spec = record["model"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec["name"], in_channels=int(spec["in_channels"]),
                       num_classes=int(spec["num_classes"]), image_size=int(spec["image_size"]),
                       dropout=float(spec["dropout"]), width=spec.get("width"))


def train(config: TrainConfig, datasets: dict[str, ImageDataset], out_dir: str | os.PathLike, *,
          resume: bool = False,
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
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
    task = task_of(config.model)
    train_ds, val_ds = _check_datasets(datasets, task)
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / "checkpoint.pt"
    record = run_record(config, train_ds)
    if checkpoint_path.exists() and not resume:
        raise MedsureInputError(f"run folder '{out_dir}' already holds a run; pass resume=True "
                                "(CLI: --resume) to continue it or choose a new --out folder")
    if resume and checkpoint_path.exists():
        saved = json.loads((out_dir / "config.json").read_text())
        mismatch = [k for k in ("task", "class_names", "model", "train")
                    if json.dumps(_comparable(saved.get(k)), sort_keys=True)
                    != json.dumps(_comparable(to_jsonable(record[k])), sort_keys=True)]
        if mismatch:
            raise MedsureInputError(f"cannot resume '{out_dir}': its config.json differs in "
                                    f"{mismatch} from the requested run")
    device = resolve_device(config.device)
    bf16 = default_bf16(device) if config.bf16 is None else bool(config.bf16)
    channels_last = default_channels_last(device) if config.channels_last is None else bool(
        config.channels_last)
    loss_name = config.loss if config.loss != "auto" else ("ce" if task == "classification"
                                                           else "ce_dice")
    class_weight = None
    if config.class_weights == "balanced":
        if task != "classification":
            raise MedsureInputError("class_weights='balanced' applies to classification only")
        counts = np.bincount(np.asarray(train_ds.targets), minlength=len(train_ds.class_names))
        if np.any(counts == 0):
            raise MedsureInputError(f"class_weights='balanced': class counts {counts.tolist()} in train; "
                                    "every class needs training samples")
        class_weight = torch.as_tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)
    loss_fn = make_loss(task, loss_name, class_weight)
    monitor = config.monitor
    if monitor == "auto":
        if task == "segmentation":
            monitor = "dice"
        else:
            present = len(np.unique(val_ds.targets)) == val_ds.n_classes
            monitor = "auc" if present else "accuracy"
    if task == "classification" and monitor == "dice" or task == "segmentation" and monitor in (
            "auc", "accuracy"):
        raise MedsureInputError(f"monitor={monitor!r} does not apply to {task}")
    higher_is_better = monitor != "loss"

    out_dir.mkdir(parents=True, exist_ok=True)
    devices = [torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), deterministic_mode(device), \
            torch_threads(config.num_threads):
        torch.manual_seed(config.seed)  # dropout masks; the caller's state is restored after
        model = build_from_record(record, seed=config.seed)
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
        shuffle_gen = torch.Generator().manual_seed(config.seed + 1)
        augment_gen = torch.Generator().manual_seed(config.seed + 2)
        history: list[dict[str, Any]] = []
        start_epoch, best_epoch, best_metric, bad_epochs, finished = 0, 0, float("nan"), 0, False
        if resume and checkpoint_path.exists():
            state = load_checkpoint(checkpoint_path)
            if state.get("format") != CHECKPOINT_FORMAT:
                raise MedsureInputError(f"checkpoint '{checkpoint_path}' has format "
                                        f"{state.get('format')}, expected {CHECKPOINT_FORMAT}")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and "cuda" in state["rng"]:
                torch.cuda.set_rng_state(state["rng"]["cuda"])
            shuffle_gen.set_state(state["rng"]["shuffle"])
            augment_gen.set_state(state["rng"]["augment"])
            start_epoch = int(state["epoch"])
            best_epoch, best_metric = int(state["best_epoch"]), float(state["best_metric"])
            bad_epochs, finished = int(state["bad_epochs"]), bool(state["finished"])
            history = list(state["history"])
        else:
            write_json(out_dir / "config.json", record)

        train_x, train_y = images_to_tensor(train_ds.images), torch.from_numpy(train_ds.targets)
        n = len(train_ds)
        stopped_early = bool(finished and start_epoch < config.epochs)
        epoch = start_epoch
        while not finished and epoch < config.epochs:
            epoch += 1
            started = time.perf_counter()
            lr = config.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            order = torch.randperm(n, generator=shuffle_gen)
            batches = [order[i:i + config.batch_size] for i in range(0, n, config.batch_size)]
            if len(batches) > 1 and len(batches[-1]) < 2:
                batches = batches[:-1]  # BatchNorm cannot train on a batch of one
            total_loss, seen = 0.0, 0
            bar = progress(batches, desc=f"epoch {epoch}/{config.epochs}")
            for index in bar:
                x = to_unit_float(train_x[index])
                y = train_y[index]
                if config.augment:
                    x, y_aug = random_flip_shift(
                        x, y if task == "segmentation" else None, generator=augment_gen,
                        hflip=config.hflip, vflip=config.vflip, max_shift=config.max_shift)
                    if task == "segmentation":
                        y = y_aug
                x, y = x.to(device), y.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(x)
                loss = loss_fn(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(index)
                seen += len(index)
                bar.set_postfix(loss=f"{total_loss / seen:.4f}")
            val = evaluate(model, val_ds, loss_fn=loss_fn, batch_size=max(config.batch_size, 64),
                           device=device, bf16=bf16, channels_last=channels_last)
            bar.set_postfix(loss=f"{total_loss / max(seen, 1):.4f}",
                            **{f"val_{monitor}": f"{val[monitor]:.4f}"})
            bar.close()
            current = val[monitor]
            improved = (not math.isnan(current)) and (
                math.isnan(best_metric)
                or (current > best_metric if higher_is_better else current < best_metric))
            if improved:
                best_metric, best_epoch, bad_epochs = current, epoch, 0
                save_checkpoint(out_dir / "best.pt", {
                    "format": CHECKPOINT_FORMAT, "epoch": epoch, "monitor": monitor,
                    "metric": current, "model": _cpu_state(model)})
            else:
                bad_epochs += 1
            entry = {"epoch": epoch, "lr": lr, "train_loss": total_loss / max(seen, 1),
                     **{f"val_{k}": v for k, v in val.items()}, "monitor": monitor,
                     "improved": improved, "seconds": round(time.perf_counter() - started, 3)}
            history.append(entry)
            if config.patience and bad_epochs >= config.patience and epoch < config.epochs:
                finished = stopped_early = True
            if epoch >= config.epochs:
                finished = True
            rng = {"torch": torch.get_rng_state(), "shuffle": shuffle_gen.get_state(),
                   "augment": augment_gen.get_state()}
            if device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state()
            save_checkpoint(checkpoint_path, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch, "model": _cpu_state(model),
                "optimizer": optimizer.state_dict(), "rng": rng, "best_epoch": best_epoch,
                "best_metric": best_metric, "bad_epochs": bad_epochs, "finished": finished,
                "history": history})
            write_json(out_dir / "history.json", history)
            if on_epoch_end is not None:
                on_epoch_end(epoch, entry)
    # a run killed after its last checkpoint but before history.json resumes straight here
    write_json(out_dir / "history.json", history)
    if best_epoch == 0:
        raise MedsureInputError(
            f"validation {monitor} was never finite during training; check the val split")
    best = load_checkpoint(out_dir / "best.pt")
    final = build_from_record(record)
    final.load_state_dict(best["model"])
    final.eval()
    final.medsure_run = {"run_dir": str(out_dir), "config": record}  # read by predict()
    return TrainResult(run_dir=out_dir, model=final, history=history, best_epoch=best_epoch,
                       best_metric=best_metric, stopped_early=stopped_early)


def _comparable(section: Any) -> Any:
    """A config section without the settings that may change between a run and its resume."""
    if isinstance(section, dict):
        return {k: v for k, v in section.items() if k not in ("device", "num_threads")}
    return section


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: ImageDataset, *, loss_fn: Callable, batch_size: int,
             device: torch.device, bf16: bool = False,
             channels_last: bool = False) -> dict[str, float]:
    """Validation loss and metrics (accuracy & AUC, or Dice) of ``model`` on ``dataset``."""
    was_training = model.training
    model.eval()
    x_all = images_to_tensor(dataset.images)
    y_all = torch.from_numpy(dataset.targets)
    total, outputs = 0.0, []
    for start in range(0, len(dataset), batch_size):
        x = to_unit_float(x_all[start:start + batch_size]).to(device)
        y = y_all[start:start + batch_size].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        logits = logits.float()
        total += float(loss_fn(logits, y)) * len(y)
        if dataset.task == "classification":
            outputs.append(logits.cpu().numpy())
        else:
            outputs.append(logits.argmax(1).cpu().numpy())
    model.train(was_training)
    result = {"loss": total / len(dataset)}
    stacked = np.concatenate(outputs)
    if dataset.task == "classification":
        result["accuracy"] = accuracy(stacked, dataset.targets)
        result["auc"] = auc(stacked, dataset.targets)
    else:
        result["dice"] = mean_dice(stacked, dataset.targets, dataset.n_classes)
    return result
