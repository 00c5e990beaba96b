"""Training losses: cross-entropy (optionally class-weighted) and MONAI's Dice / Dice+CE."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from medsure.training.config import CLASSIFICATION_LOSSES, SEGMENTATION_LOSSES
from medsure.validation import check_choice, input_error

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_loss_name(task: str, name: str) -> str:
    """``"auto"`` → ce for classification, ce_dice for segmentation; other names pass through."""
    if name != "auto":
        return name
    return "ce" if task == "classification" else "ce_dice"


def balanced_class_weight(targets: np.ndarray, n_classes: int) -> torch.Tensor:
    """Weights ``n / (K n_k)`` per class ``(K,)`` float32 from training labels ``(N,)``.

    Every class needs at least one training sample (its weight would be infinite).
    """
    counts = np.bincount(np.asarray(targets), minlength=n_classes)
    if np.any(counts == 0):
        raise input_error(
            "class_weights='balanced'",
            f"class counts {counts.tolist()} in train",
            "every class to have training samples",
            raw=True,
        )
    return torch.as_tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)


def make_loss(task: str, name: str, class_weight: torch.Tensor | None = None) -> LossFn:
    """Loss ``f(logits, targets)``; segmentation losses use MONAI (softmax, one-hot targets).

    Parameters
    ----------
    task : "classification" or "segmentation"
    name : a loss of the task (:data:`CLASSIFICATION_LOSSES`, :data:`SEGMENTATION_LOSSES`)
    class_weight : ``(K,)`` weights of the classification cross-entropy, or None
    """
    if task == "classification":
        check_choice("loss for classification", name, CLASSIFICATION_LOSSES)
        if class_weight is None:
            return F.cross_entropy
        return lambda logits, y: F.cross_entropy(logits, y, weight=class_weight.to(logits.device))
    if class_weight is not None:
        raise input_error("class_weights", "weights for a segmentation model", "classification only", raw=True)
    check_choice("loss for segmentation", name, SEGMENTATION_LOSSES)
    if name == "ce":
        return F.cross_entropy
    from monai.losses import DiceCELoss, DiceLoss

    monai_loss = (
        DiceLoss(softmax=True, to_onehot_y=True) if name == "dice" else DiceCELoss(softmax=True, to_onehot_y=True)
    )

    def loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return monai_loss(logits, masks[:, None])  # MONAI wants a channel axis on the labels

    return loss
