"""The epoch loop: one epoch of training, one validation pass.

Both take the model and everything it computes with explicitly (device, bf16 autocast, memory
format, loss), so each can be read — and tested — on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medsure.data.base import ImageDataset
from medsure.evidential import EvidentialLoss, alpha_from_outputs
from medsure.training.augment import add_gaussian_noise, random_flip_shift
from medsure.training.losses import LossFn
from medsure.training.metrics import accuracy, auc, mean_dice


@dataclass(frozen=True)
class Compute:
    """How a run computes: device, bf16 autocast and memory format (resolved for this machine)."""

    device: torch.device
    bf16: bool
    channels_last: bool

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of ``model`` on a CPU float batch ``x``, moved to the device."""
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = model(x)
        return logits.float()  # the loss and the metrics in float32 whatever the autocast


@dataclass(frozen=True)
class Augmentation:
    """Random flips and whole-pixel shifts of a training batch (masks move with their images),
    then Gaussian noise on the images only when ``noise_sigma`` has a σ > 0."""

    hflip: bool
    vflip: bool
    max_shift: float
    noise_sigma: tuple[float, ...] = ()  # σ in [0, 1] units; several: one drawn per sample

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, task: str, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if task == "segmentation":  # label maps move with their images
            x, y = random_flip_shift(
                x, y, generator=generator, hflip=self.hflip, vflip=self.vflip, max_shift=self.max_shift
            )
        else:
            x, _ = random_flip_shift(
                x, None, generator=generator, hflip=self.hflip, vflip=self.vflip, max_shift=self.max_shift
            )
        if any(s > 0 for s in self.noise_sigma):  # no draw when off: runs without noise stay bit-identical
            x = add_gaussian_noise(x, self.noise_sigma, generator=generator)
        return x, y


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, C)`` uint8 or float32 → ``(N, C, H, W)`` tensor, dtype kept (cheap to hold)."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1)))


def to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 / 255; float tensors pass through (assumed already in [0, 1])."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(255.0)
    return batch.float()


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Learning rate of ``epoch`` (1-based): cosine decay from ``base_lr`` towards 0."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches of one epoch; a last batch of one sample is dropped, because
    BatchNorm cannot train on it."""
    order = torch.randperm(n, generator=generator)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches = batches[:-1]
    return batches


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    images: torch.Tensor,
    targets: torch.Tensor,
    batches: Iterable[torch.Tensor],
    *,
    task: str,
    compute: Compute,
    augment: Augmentation | None,
    augment_generator: torch.Generator,
    on_batch: Callable[[float], Any] | None = None,
) -> float:
    """One pass over ``batches``; returns the mean training loss (per sample).

    Parameters
    ----------
    images : ``(N, C, H, W)`` uint8 or float tensor of the training split (on CPU)
    targets : ``(N,)`` labels or ``(N, H, W)`` masks
    batches : index tensors, in order (a progress bar over them is fine)
    augment : None for no augmentation; its draws come from ``augment_generator``
    on_batch : called with the running mean loss after each batch (e.g. a bar's postfix)
    """

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        x, y = to_unit_float(images[index]), targets[index]
        if augment is not None:
            x, y = augment(x, y, task, augment_generator)
        return loss_fn(compute.forward(model, x), y.to(compute.device))

    model.train()
    return optimise_epoch(batch_loss, optimizer, batches, on_batch=on_batch)


def optimise_epoch(
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batches: Iterable[torch.Tensor],
    *,
    on_batch: Callable[[float], Any] | None = None,
) -> float:
    """The optimisation steps of one epoch, shared by every trainer (single-task and joint).

    ``batch_loss(index)`` returns the mean loss of the batch of those indices; returns the mean
    loss per sample over the epoch, and calls ``on_batch`` with the running mean after each batch.
    """
    total_loss, seen = 0.0, 0
    for index in batches:
        loss = batch_loss(index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += float(loss.detach()) * len(index)
        seen += len(index)
        if on_batch is not None:
            on_batch(total_loss / seen)
    return total_loss / max(seen, 1)


@torch.no_grad()
def validate_epoch(
    model: nn.Module, dataset: ImageDataset, *, loss_fn: LossFn, batch_size: int, compute: Compute
) -> dict[str, float]:
    """Validation loss and metrics of ``model`` on ``dataset``, in eval mode (mode restored).

    Returns
    -------
    dict
        ``loss`` and ``accuracy``, ``auc`` (classification) or ``dice`` (segmentation; mean
        foreground Dice per image from :func:`medsure.training.metrics.mean_dice`).
    """
    was_training = model.training
    model.eval()
    targets = dataset.require_targets("validation split")
    x_all, y_all = images_to_tensor(dataset.images), torch.from_numpy(targets)
    total, outputs = 0.0, []
    for start in range(0, len(dataset), batch_size):
        logits = compute.forward(model, to_unit_float(x_all[start : start + batch_size]))
        y = y_all[start : start + batch_size].to(compute.device)
        total += float(loss_fn(logits, y)) * len(y)
        if isinstance(loss_fn, EvidentialLoss):  # metrics on alpha / S, the probabilities the artifact gives
            logits = torch.log(alpha_from_outputs(logits, loss_fn.evidence))
        # classification keeps the logits (AUC); segmentation only the label map (memory)
        outputs.append((logits if dataset.task == "classification" else logits.argmax(1)).cpu().numpy())
    model.train(was_training)
    result = {"loss": total / len(dataset)}
    stacked = np.concatenate(outputs)
    if dataset.task == "classification":
        result["accuracy"] = accuracy(stacked, targets)
        result["auc"] = auc(stacked, targets)
    else:
        result["dice"] = mean_dice(stacked, targets, dataset.n_classes)
    return result
