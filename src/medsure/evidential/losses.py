"""The evidential losses of Sensoy et al. (2018), per sample or per pixel (torch).

For concentrations ``alpha`` ``(N, K)`` or ``(N, K, H, W)``, ``S = sum_k alpha_k``,
``p = alpha / S`` and one-hot targets ``y``:

- ``"mse"``      ``sum_k (y_k - p_k)^2 + p_k (1 - p_k) / (S + 1)``  (Sensoy et al. eq. 5)
- ``"log"``      ``sum_k y_k (log S - log alpha_k)``               (type-II likelihood, eq. 3)
- ``"digamma"``  ``sum_k y_k (psi(S) - psi(alpha_k))``             (Bayes risk of cross-entropy, eq. 4)

plus ``lambda_t KL(Dir(alpha~) || Dir(1))`` with ``alpha~ = y + (1 - y) alpha`` (the evidence of
the wrong classes only) and the annealing coefficient ``lambda_t = min(1, epoch / annealing_epochs)``.
For segmentation every pixel is a sample; an optional soft Dice term on the expected
probabilities is added with weight ``dice_weight``.

References
----------
Sensoy, Kaplan, Kandemir (2018), Evidential deep learning to quantify classification
uncertainty, NeurIPS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medsure.evidential.dirichlet import alpha_from_outputs
from medsure.validation import check_choice, check_float, check_int, input_error

EVIDENTIAL_LOSSES = ("mse", "log", "digamma")


def _one_hot(targets: torch.Tensor, k: int) -> torch.Tensor:
    """``(N,)`` or ``(N, H, W)`` int labels -> ``(N, K)`` or ``(N, K, H, W)`` float one-hot."""
    if targets.dtype.is_floating_point:
        raise input_error("targets", f"dtype {targets.dtype}", "integer class labels", raw=True)
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= k):
        raise input_error(
            "targets", f"labels in [{int(targets.min())}, {int(targets.max())}]", f"labels in [0, {k})", raw=True
        )
    return torch.movedim(F.one_hot(targets.long(), k), -1, 1).to(torch.float32)


def evidential_data_term(alpha: torch.Tensor, targets: torch.Tensor, kind: str = "digamma") -> torch.Tensor:
    """The data term of one evidential loss per sample (or per pixel), class axis 1 removed.

    Parameters
    ----------
    alpha : ``(N, K)`` or ``(N, K, H, W)`` concentrations (> 0)
    targets : ``(N,)`` or ``(N, H, W)`` integer labels in ``[0, K)``
    kind : "mse", "log" or "digamma"

    Returns
    -------
    tensor ``(N,)`` or ``(N, H, W)``
    """
    check_choice("evidential loss", kind, EVIDENTIAL_LOSSES)
    y = _one_hot(targets, alpha.shape[1]).to(alpha.dtype)
    strength = alpha.sum(dim=1, keepdim=True)
    if kind == "mse":
        p = alpha / strength
        return ((y - p) ** 2 + p * (1.0 - p) / (strength + 1.0)).sum(dim=1)
    if kind == "log":
        return (y * (torch.log(strength) - torch.log(alpha))).sum(dim=1)
    return (y * (torch.digamma(strength) - torch.digamma(alpha))).sum(dim=1)


def kl_to_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """``KL(Dir(alpha) || Dir(1, ..., 1))`` in closed form, class axis 1 removed.

    ``log Gamma(S) - log Gamma(K) - sum_k log Gamma(alpha_k) + sum_k (alpha_k - 1)(psi(alpha_k) - psi(S))``
    (the uniform Dirichlet's density is ``Gamma(K)``). 0 exactly when ``alpha == 1``.
    """
    k = alpha.shape[1]
    strength = alpha.sum(dim=1, keepdim=True)
    first = torch.lgamma(strength.squeeze(1)) - math.lgamma(k) - torch.lgamma(alpha).sum(dim=1)
    second = ((alpha - 1.0) * (torch.digamma(alpha) - torch.digamma(strength))).sum(dim=1)
    return first + second


def _kl_of_wrong_evidence(alpha: torch.Tensor, y: torch.Tensor, digamma_alpha: torch.Tensor) -> torch.Tensor:
    """``kl_to_uniform(y + (1 - y) alpha)`` from ``psi(alpha)`` computed once (the loss's hot path
    on segmentation maps). The true class has concentration 1 there and adds nothing, so with
    ``w = 1 - y`` and ``S~ = 1 + sum_k w_k alpha_k``:
    ``log Gamma(S~) - log Gamma(K) - sum_k w_k log Gamma(alpha_k)
    + sum_k w_k (alpha_k - 1) psi(alpha_k) - psi(S~) (S~ - K)``."""
    k = alpha.shape[1]
    wrong = 1.0 - y
    strength = 1.0 + (wrong * alpha).sum(dim=1)
    return (
        torch.lgamma(strength)
        - math.lgamma(k)
        - (wrong * torch.lgamma(alpha)).sum(dim=1)
        + (wrong * (alpha - 1.0) * digamma_alpha).sum(dim=1)
        - torch.digamma(strength) * (strength - k)
    )


def annealing_coefficient(epoch: int, annealing_epochs: int = 10) -> float:
    """``min(1, epoch / annealing_epochs)``: the KL weight in (1-based) ``epoch``.

    Sensoy et al. anneal the KL term in so that the network first learns to put evidence on the
    right class before being pushed to drop misleading evidence. ``annealing_epochs=0`` gives 1.
    """
    check_int("epoch", epoch, low=0)
    check_int("annealing_epochs", annealing_epochs, low=0)
    return 1.0 if annealing_epochs == 0 else min(1.0, epoch / annealing_epochs)


def soft_dice_loss(probs: torch.Tensor, targets: torch.Tensor, *, smooth: float = 1e-5) -> torch.Tensor:
    """``1 - mean_{n,k} (2 |p y| + smooth) / (|p| + |y| + smooth)`` over images and classes.

    Parameters
    ----------
    probs : ``(N, K, H, W)`` probabilities (expected probabilities of the Dirichlet)
    targets : ``(N, H, W)`` integer label maps
    smooth : added to numerator and denominator (MONAI's default)

    Notes
    -----
    Equals MONAI's ``DiceLoss(to_onehot_y=True)`` on the same probabilities (default smoothing).
    """
    y = _one_hot(targets, probs.shape[1]).to(probs.dtype)
    dims = tuple(range(2, probs.ndim))
    intersection = (probs * y).sum(dim=dims)
    denominator = probs.sum(dim=dims) + y.sum(dim=dims)
    return 1.0 - ((2.0 * intersection + smooth) / (denominator + smooth)).mean()


@dataclass
class EvidentialLoss:
    """Evidential loss ``f(outputs, targets)`` on raw outputs, for the trainer.

    Outputs pass through the evidence function (``alpha = f(outputs) + 1``); the loss is the mean
    over samples (pixels) of ``data + lambda_t KL(alpha~)`` plus ``dice_weight * soft Dice`` for
    segmentation. Set :attr:`epoch` before each epoch (the trainer does) to anneal ``lambda_t``.

    Attributes
    ----------
    kind : "mse", "log" or "digamma"
    evidence : "relu", "softplus" or "exp"
    annealing_epochs : epochs over which the KL weight rises linearly to 1 (Sensoy et al.: 10)
    kl_weight : the KL term's final weight (1 in the paper)
    dice_weight : weight of the soft Dice term (segmentation only; 0 turns it off)
    epoch : current 1-based epoch (0 before training: no KL)
    """

    kind: str = "digamma"
    evidence: str = "relu"
    annealing_epochs: int = 10
    kl_weight: float = 1.0
    dice_weight: float = 0.0
    epoch: int = 0

    def __post_init__(self) -> None:
        check_choice("evidential loss", self.kind, EVIDENTIAL_LOSSES)
        check_int("annealing_epochs", self.annealing_epochs, low=0)
        check_float("kl_weight", self.kl_weight, low=0.0)
        check_float("dice_weight", self.dice_weight, low=0.0)

    def on_epoch(self, epoch: int) -> None:
        """Set the 1-based epoch (the KL weight follows it)."""
        self.epoch = check_int("epoch", epoch, low=0)

    def from_alpha(self, alpha: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss on concentrations ``alpha`` (class axis 1) and integer ``targets``."""
        y = _one_hot(targets, alpha.shape[1]).to(alpha.dtype)
        coefficient = self.kl_weight * annealing_coefficient(self.epoch, self.annealing_epochs)
        digamma_alpha = torch.digamma(alpha) if coefficient > 0 or self.kind == "digamma" else None
        if self.kind == "digamma" and digamma_alpha is not None:  # shares psi(alpha) with the KL term
            data = torch.digamma(alpha.sum(dim=1)) - (y * digamma_alpha).sum(dim=1)
        else:
            data = evidential_data_term(alpha, targets, self.kind)
        loss = data.mean()
        if coefficient > 0 and digamma_alpha is not None:
            loss = loss + coefficient * _kl_of_wrong_evidence(alpha, y, digamma_alpha).mean()
        if self.dice_weight > 0 and alpha.ndim > 2:
            loss = loss + self.dice_weight * soft_dice_loss(alpha / alpha.sum(dim=1, keepdim=True), targets)
        return loss

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.from_alpha(alpha_from_outputs(outputs, self.evidence), targets)
