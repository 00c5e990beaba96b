"""Training losses: cross-entropy (optionally class-weighted), MONAI's Dice / Dice+CE, the
evidential losses (:mod:`medsure.evidential`) and the UML joint objective."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medsure.evidential.losses import EvidentialLoss
from medsure.training.config import CLASSIFICATION_LOSSES, EVIDENTIAL_LOSSES, SEGMENTATION_LOSSES
from medsure.validation import check_choice, input_error

# f(outputs, targets): tensors for single-task models; a dict of outputs and (masks, labels) for joint ones
LossFn = Callable[[Any, Any], torch.Tensor]


def resolve_loss_name(task: str, name: str) -> str:
    """``"auto"`` → ce for classification, ce_dice for segmentation, evidential for joint models;
    other names pass through."""
    if name != "auto":
        return name
    return {"classification": "ce", "joint": "evidential"}.get(task, "ce_dice")


def is_evidential(name: str) -> bool:
    """True for the evidential loss names (the model's outputs are then Dirichlet evidence)."""
    return name in EVIDENTIAL_LOSSES


def evidential_kind(name: str) -> str:
    """``"evidential_mse"`` → ``"mse"``; plain ``"evidential"`` is the digamma form."""
    return "digamma" if name == "evidential" else name.removeprefix("evidential_")


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


def make_loss(
    task: str,
    name: str,
    class_weight: torch.Tensor | None = None,
    *,
    evidence: str = "softplus",
    annealing_epochs: int = 10,
) -> LossFn:
    """Loss ``f(logits, targets)``; segmentation losses use MONAI (softmax, one-hot targets).

    Parameters
    ----------
    task : "classification", "segmentation" or "joint" (a :class:`UMLLoss` on the joint model's
        output dict and ``(masks, labels)`` targets)
    name : a loss of the task (:data:`CLASSIFICATION_LOSSES`, :data:`SEGMENTATION_LOSSES`;
        joint models take the evidential losses)
    class_weight : ``(K,)`` weights of the classification cross-entropy, or None
    evidence, annealing_epochs : evidential losses: evidence function and KL annealing epochs
        (an evidential loss object follows the epoch through ``on_epoch``)
    """
    if task == "joint":
        check_choice("loss for a joint model", name, EVIDENTIAL_LOSSES)
        if class_weight is not None:
            raise input_error("class_weights", "weights for a joint model", "no class weights", raw=True)
        return UMLLoss(kind=evidential_kind(name), evidence=evidence, annealing_epochs=annealing_epochs)
    if is_evidential(name):
        check_choice(
            f"loss for {task}", name, CLASSIFICATION_LOSSES if task == "classification" else SEGMENTATION_LOSSES
        )
        if class_weight is not None:
            raise input_error("class_weights", "'balanced' with an evidential loss", "the 'ce' loss", raw=True)
        return EvidentialLoss(kind=evidential_kind(name), evidence=evidence, annealing_epochs=annealing_epochs)
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


@dataclass
class UMLLoss:
    """The mutual-learning objective of the UML joint model (Ren et al., MICCAI 2023).

    ``L = L_cls(alpha_class, y) + L_seg(alpha_seg, mask) + initial_weight * L_seg(alpha_seg_initial, mask)``,
    each an evidential loss with the annealed KL term (:class:`~medsure.evidential.EvidentialLoss`);
    the segmentation terms add ``dice_weight`` times the soft Dice of the expected probabilities.
    The initial segmentation (the navigator's input) is supervised too, so that its uncertainty
    map means something. Called as ``loss(outputs, (masks, labels))``.
    """

    kind: str = "digamma"
    evidence: str = "softplus"
    annealing_epochs: int = 10
    initial_weight: float = 0.5
    dice_weight: float = 1.0
    classification: EvidentialLoss = field(init=False)
    segmentation: EvidentialLoss = field(init=False)

    def __post_init__(self) -> None:
        self.classification = EvidentialLoss(self.kind, self.evidence, self.annealing_epochs)
        self.segmentation = EvidentialLoss(
            self.kind, self.evidence, self.annealing_epochs, dice_weight=self.dice_weight
        )

    def on_epoch(self, epoch: int) -> None:
        self.classification.on_epoch(epoch)
        self.segmentation.on_epoch(epoch)

    def parts(
        self, outputs: dict[str, torch.Tensor], targets: tuple[torch.Tensor, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The three terms: "class", "seg" and "seg_initial" (scalars)."""
        masks, labels = targets
        parts = {
            "class": self.classification(outputs["class"], labels),
            "seg": self.segmentation(outputs["seg"], masks),
        }
        if outputs["seg_initial"] is not outputs["seg"]:  # without navigator they are one output
            parts["seg_initial"] = self.segmentation(outputs["seg_initial"], masks)
        return parts

    def __call__(self, outputs: dict[str, torch.Tensor], targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        parts = self.parts(outputs, targets)
        return parts["class"] + parts["seg"] + self.initial_weight * parts.get("seg_initial", torch.zeros(()))
