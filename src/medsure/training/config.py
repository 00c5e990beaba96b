"""The settings of one training run: :class:`TrainConfig` (plain values, saved in ``config.json``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from medsure.validation import check_choice, check_float, check_int, input_error

MONITORS = ("auto", "auc", "accuracy", "dice", "loss")
# evidential losses (medsure.evidential, Sensoy et al. 2018): "evidential" is the digamma form
EVIDENTIAL_LOSSES = ("evidential", "evidential_mse", "evidential_log", "evidential_digamma")
CLASSIFICATION_LOSSES = ("ce",) + EVIDENTIAL_LOSSES
SEGMENTATION_LOSSES = ("ce", "dice", "ce_dice") + EVIDENTIAL_LOSSES
EVIDENCE_FUNCTIONS = ("softplus", "relu", "exp")


@dataclass
class TrainConfig:
    """Settings of one training run (all plain values, saved as ``config.json``).

    Attributes
    ----------
    model : "resnet18", "resnet50", "small_cnn" or "unet"
    epochs : maximal number of epochs
    batch_size, lr, weight_decay : optimisation (AdamW, cosine learning-rate decay)
    loss : "auto" (ce for classification, ce_dice for segmentation, evidential for joint models),
        "ce", "dice", "ce_dice", or an evidential loss: "evidential" (= "evidential_digamma"),
        "evidential_mse", "evidential_log" (the model's outputs become Dirichlet evidence)
    evidence : evidential losses and joint models: "softplus", "relu" or "exp" evidence function
    kl_annealing_epochs : evidential losses: the KL term's weight is min(1, epoch / this)
    monitor : validation metric for early stopping and ``best.pt``: "auto" (AUC for
        classification — accuracy when a class is missing from val —, Dice for segmentation),
        "auc", "accuracy", "dice" or "loss"
    patience : stop after this many epochs without improvement (0: never stop early)
    seed : seeds weight init, shuffling, augmentation and dropout
    dropout : dropout probability in the model (> 0 enables MC dropout)
    width : base width for small_cnn / unet (None: model default)
    augment, hflip, vflip, max_shift : random flips and whole-pixel shifts (fraction of side)
    noise_sigma : Gaussian-noise augmentation: σ ≥ 0 in [0, 1] image units added to training images
        (after flips/shifts, not to masks, not at validation), or a list of σ, one drawn per image;
        0 (default) is off. Applies even with ``augment=False`` (which turns off flips and shifts only)
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
    deterministic : strict determinism for GPU users: ``torch.use_deterministic_algorithms(True)``
        raises on an operation that has no deterministic kernel (instead of warning),
        ``cudnn.deterministic`` is set and, on CUDA, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``.
        False (default) still asks for deterministic kernels where torch has them and only warns;
        on CPU both give the same weights (same seed, thread count and CPU kind)
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
    noise_sigma: float | list[float] = 0.0
    bf16: bool | None = None
    channels_last: bool | None = None
    device: str = "auto"
    num_threads: int | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    class_weights: str | None = None
    deterministic: bool = False
    evidence: str = "softplus"
    kl_annealing_epochs: int = 10

    def validate(self) -> None:
        """Raise :class:`~medsure.errors.MedsureInputError` naming the first bad setting."""
        from medsure.models import ALL_MODEL_NAMES

        check_choice("model", self.model, ALL_MODEL_NAMES)
        check_int("epochs", self.epochs, low=1)
        check_int("batch_size", self.batch_size, low=1)
        check_int("patience", self.patience, low=0, hint="0 turns early stopping off")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise input_error("lr", self.lr, "a positive finite number")
        check_float("max_shift", self.max_shift, low=0.0, high=0.5, closed="left")
        for sigma in self.noise_sigmas():
            check_float("noise_sigma", sigma, low=0.0, hint="0 turns noise augmentation off")
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        check_choice("class_weights", self.class_weights, (None, "balanced"))
        check_choice("monitor", self.monitor, MONITORS)
        check_choice("loss", self.loss, ("auto",) + SEGMENTATION_LOSSES)
        check_choice("deterministic", self.deterministic, (True, False))
        check_choice("evidence", self.evidence, EVIDENCE_FUNCTIONS)
        check_int("kl_annealing_epochs", self.kl_annealing_epochs, low=0, hint="0 gives the KL term full weight")

    def noise_sigmas(self) -> tuple[float, ...]:
        """``noise_sigma`` as a non-empty tuple (one σ or several; ``(0.0,)`` when off)."""
        values = self.noise_sigma if isinstance(self.noise_sigma, (list, tuple)) else [self.noise_sigma]
        if len(values) == 0:
            raise input_error("noise_sigma", self.noise_sigma, "a number >= 0 or a non-empty list of them")
        return tuple(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from plain values (e.g. ``config.json["train"]``); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise input_error("training options", unknown, f"names among {sorted(known)}")
        return cls(**values)
