"""The epoch loop of joint models (UML): one epoch of training, one validation pass.

Like :mod:`medsure.training.loop`, but the model returns a dict of outputs ("class", "seg",
"seg_initial") and the targets are masks *and* image labels (the joint dataset format of
:mod:`medsure.data.joint`). The loss is a :class:`~medsure.training.losses.UMLLoss`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from medsure.data.base import ImageDataset
from medsure.data.joint import joint_labels
from medsure.evidential import alpha_from_outputs
from medsure.training.loop import Augmentation, Compute, images_to_tensor, optimise_epoch, to_unit_float
from medsure.training.losses import UMLLoss
from medsure.training.metrics import accuracy, auc, mean_dice


def joint_forward(compute: Compute, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The joint model's outputs (float32) on a CPU float batch ``x``, moved to the device."""
    x = x.to(compute.device)
    if compute.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(compute.device.type, dtype=torch.bfloat16, enabled=compute.bf16):
        outputs = model(x)
    return {k: v.float() for k, v in outputs.items()}


def joint_train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: UMLLoss,
    images: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    batches: Iterable[torch.Tensor],
    *,
    compute: Compute,
    augment: Augmentation | None,
    augment_generator: torch.Generator,
    on_batch: Callable[[float], Any] | None = None,
) -> float:
    """One pass over ``batches``; returns the mean training loss (per image).

    Parameters
    ----------
    images : ``(N, C, H, W)`` uint8 or float tensor (CPU)
    masks : ``(N, H, W)`` label maps; labels : ``(N,)`` image classes
    augment : flips and shifts move each mask with its image; the labels do not change
    """

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        x, m, y = to_unit_float(images[index]), masks[index], labels[index]
        if augment is not None:
            x, m = augment(x, m, "segmentation", augment_generator)
        return loss_fn(joint_forward(compute, model, x), (m.to(compute.device), y.to(compute.device)))

    model.train()
    return optimise_epoch(batch_loss, optimizer, batches, on_batch=on_batch)


@torch.no_grad()
def joint_validate_epoch(
    model: nn.Module, dataset: ImageDataset, *, loss_fn: UMLLoss, batch_size: int, compute: Compute
) -> dict[str, float]:
    """Validation loss and metrics in eval mode (mode restored).

    Returns
    -------
    dict
        ``loss``, ``accuracy`` and ``auc`` of the classification, ``dice`` of the segmentation,
        and ``joint`` = mean of the AUC (accuracy when a class is missing from val) and the Dice,
        the default early-stopping metric of joint models.
    """
    was_training = model.training
    model.eval()
    masks = dataset.require_targets("validation split")
    labels, _ = joint_labels(dataset, "validation split")
    x_all, m_all, y_all = images_to_tensor(dataset.images), torch.from_numpy(masks), torch.from_numpy(labels)
    total, class_outputs, seg_labels = 0.0, [], []
    for start in range(0, len(dataset), batch_size):
        outputs = joint_forward(compute, model, to_unit_float(x_all[start : start + batch_size]))
        m = m_all[start : start + batch_size].to(compute.device)
        y = y_all[start : start + batch_size].to(compute.device)
        total += float(loss_fn(outputs, (m, y))) * len(y)
        # metrics on alpha / S, the probabilities the joint prediction file gives
        class_outputs.append(torch.log(alpha_from_outputs(outputs["class"], loss_fn.evidence)).cpu().numpy())
        seg_labels.append(alpha_from_outputs(outputs["seg"], loss_fn.evidence).argmax(1).cpu().numpy())
    model.train(was_training)
    scores = np.concatenate(class_outputs)
    result = {
        "loss": total / len(dataset),
        "accuracy": accuracy(scores, labels),
        "auc": auc(scores, labels),
        "dice": mean_dice(np.concatenate(seg_labels), masks, dataset.n_classes),
    }
    classification = result["auc"] if np.isfinite(result["auc"]) else result["accuracy"]
    result["joint"] = 0.5 * (classification + result["dice"])
    return result
