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

from medsure.evidential.dirichlet import alpha_from_outputs
from medsure.validation import check_choice, check_float, check_int, input_error

EVIDENTIAL_LOSSES = ("mse", "log", "digamma")


def _check_targets(targets: torch.Tensor, k: int) -> None:
    """Integer labels in ``[0, k)`` (one clear line otherwise)."""
    if targets.dtype.is_floating_point:
        raise input_error("targets", f"dtype {targets.dtype}", "integer class labels", raw=True)
    if targets.numel():
        low, high = torch.aminmax(targets)
        if int(low) < 0 or int(high) >= k:
            raise input_error("targets", f"labels in [{int(low)}, {int(high)}]", f"labels in [0, {k})", raw=True)


def _one_hot(targets: torch.Tensor, k: int) -> torch.Tensor:
    """``(N,)`` or ``(N, H, W)`` int labels -> ``(N, K)`` or ``(N, K, H, W)`` float one-hot."""
    _check_targets(targets, k)
    classes = torch.arange(k, device=targets.device).view(1, k, *([1] * (targets.ndim - 1)))
    return (targets.unsqueeze(1) == classes).to(torch.float32)


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


# Asymptotic series of digamma and trigamma in w = 1 / z^2, used for z >= _SHIFT (Abramowitz &
# Stegun 6.3.18 and 6.4.12): truncation error below 1e-10 there, far under float32 rounding.
_SHIFT = 6
_DIGAMMA_SERIES = (-1 / 12, 1 / 120, -1 / 252, 1 / 240, -1 / 132)
_TRIGAMMA_SERIES = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66)


def _horner_(out: torch.Tensor, w: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    """``sum_i c_i w^(i + 1)`` written into ``out`` (no new tensors; no autograd)."""
    out.fill_(coefficients[-1])
    for c in coefficients[-2::-1]:
        out.mul_(w).add_(c)
    return out.mul_(w)


def _digamma_series(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``psi(x)`` and ``psi'(x)`` for ``x > 0``, without autograd: the recurrence
    ``psi(x) = psi(x + 6) - sum_{i<6} 1 / (x + i)`` (and its derivative) and the asymptotic series
    at ``x + 6``.

    Why not ``torch.digamma``: on CPU its kernel (and polygamma's, its derivative) is scalar,
    about 100 ns per value here, so on every pixel of a mask, forward and backward, it costs more
    than the network. These vectorised operations give the same values (within 1e-6 relative in
    float32, 1e-9 in float64). They work in place on six buffers: each fresh full-size tensor
    costs page faults, which on a small VM cost more than the arithmetic.
    """
    tmp = torch.reciprocal(x)
    recurrence = tmp.clone()
    recurrence_sq = tmp * tmp
    for i in range(1, _SHIFT):
        torch.add(x, i, out=tmp).reciprocal_()
        recurrence.add_(tmp)
        recurrence_sq.addcmul_(tmp, tmp)
    z_inverse = torch.add(x, _SHIFT, out=tmp).reciprocal_()
    w = z_inverse * z_inverse
    series = _horner_(torch.empty_like(w), w, _DIGAMMA_SERIES)
    value = torch.log(z_inverse).neg_().add_(z_inverse, alpha=-0.5).add_(series).sub_(recurrence)
    series = _horner_(series, w, _TRIGAMMA_SERIES)
    derivative = recurrence_sq.add_(z_inverse).add_(w, alpha=0.5).addcmul_(z_inverse, series)
    return value, derivative


class _Digamma(torch.autograd.Function):
    """``psi(x)`` with the derivative ``psi'(x)`` from the same vectorised series (``x > 0``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        value, derivative = _digamma_series(x)
        ctx.save_for_backward(derivative)
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (derivative,) = ctx.saved_tensors
        return grad * derivative


def fast_digamma(x: torch.Tensor) -> torch.Tensor:
    """``torch.digamma`` for ``x > 0`` (concentrations), vectorised on CPU; differentiable.

    Off the CPU it is ``torch.digamma`` (already vectorised there).
    """
    if x.device.type != "cpu":
        return torch.digamma(x)
    return _Digamma.apply(x)


class _BinaryEvidential(torch.autograd.Function):
    """``mean(data) + coefficient * mean(KL)`` over the pixels of a K = 2 concentration map, with
    its gradient computed in the forward pass (closed forms; see :func:`_binary_terms`)."""

    @staticmethod
    def forward(ctx, alpha: torch.Tensor, positive: torch.Tensor, kind: str, coefficient: float) -> torch.Tensor:
        first, second = alpha[:, 0], alpha[:, 1]
        true = torch.where(positive, second, first)
        wrong = torch.where(positive, first, second)
        strength = first + second
        n = true.numel()
        if kind == "digamma":
            value_s, grad_wrong = _digamma_series(strength)  # d data / d wrong = psi'(S)
            value_t, derivative_t = _digamma_series(true)
            total = value_s.sum() - value_t.sum()
            grad_true = derivative_t.neg_().add_(grad_wrong)  # psi'(S) - psi'(true)
        else:  # log: d / d wrong = 1 / S, d / d true = 1 / S - 1 / true
            total = torch.log(strength).sum() - torch.log(true).sum()
            grad_wrong = strength.reciprocal_()
            grad_true = true.reciprocal().neg_().add_(grad_wrong)
        if coefficient > 0:  # KL = log b - 1 + 1 / b, d KL / d b = 1 / b - 1 / b^2
            inverse = wrong.reciprocal()
            total = total + coefficient * (torch.log(wrong).sum() - n + inverse.sum())
            grad_wrong.add_(inverse.sub_(inverse * inverse), alpha=coefficient)
        grad = torch.empty_like(alpha)
        torch.where(positive, grad_wrong, grad_true, out=grad[:, 0])
        torch.where(positive, grad_true, grad_wrong, out=grad[:, 1])
        ctx.save_for_backward(grad.div_(n))
        return (total / n).to(alpha.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None


def _binary_terms(
    alpha: torch.Tensor, targets: torch.Tensor, kind: str, with_kl: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Data term and ``kl_to_uniform(y + (1 - y) alpha)`` per sample (pixel) for K = 2, by the
    closed forms the fused loss uses (kept for the mse form and as its readable reference).

    With ``a`` the true class's and ``b`` the wrong class's concentration (``S = a + b``), the
    modified Dirichlet is ``Dir(1, b)`` and, as ``log Gamma(1 + b) - log Gamma(b) = log b`` and
    ``psi(1 + b) - psi(b) = 1 / b``, its KL to ``Dir(1, 1)`` is ``log b - (b - 1) / b``: no
    log-gamma or digamma at all (the general form needs 3 log-gammas and 3 digammas per pixel,
    and as many derivatives in the backward pass). The data terms need only ``a`` and ``S``: the
    one-hot map is never built.

    Returns
    -------
    data ``(N[, H, W])``, and the KL term of the same shape (None unless ``with_kl``)
    """
    _check_targets(targets, 2)
    first, second = alpha[:, 0], alpha[:, 1]
    positive = targets.bool()
    true = torch.where(positive, second, first)
    wrong = torch.where(positive, first, second)
    strength = first + second
    if kind == "digamma":
        data = fast_digamma(strength) - fast_digamma(true)
    elif kind == "log":
        data = torch.log(strength) - torch.log(true)
    else:  # mse: with p = b / S the wrong class's share, sum_k (y_k - p_k)^2 = 2 p^2 and
        # sum_k p_k (1 - p_k) = 2 p (1 - p)
        p = wrong / strength
        data = 2.0 * p * p + 2.0 * p * (1.0 - p) / (strength + 1.0)
    kl = torch.log(wrong) - (wrong - 1.0) / wrong if with_kl else None
    return data, kl


def _binary_loss(alpha: torch.Tensor, targets: torch.Tensor, kind: str, coefficient: float) -> torch.Tensor:
    """``mean(data) + coefficient * mean(KL)`` for K = 2: fused on CPU for the digamma and log
    forms (one autograd node, about a dozen buffers instead of sixty), else from :func:`_binary_terms`."""
    if kind in ("digamma", "log") and alpha.device.type == "cpu":
        _check_targets(targets, 2)
        return _BinaryEvidential.apply(alpha, targets.bool(), kind, float(coefficient))
    data, kl = _binary_terms(alpha, targets, kind, with_kl=coefficient > 0)
    return data.mean() if kl is None else data.mean() + coefficient * kl.mean()


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


class _SoftDiceOfAlpha(torch.autograd.Function):
    """:func:`soft_dice_loss` of the expected probabilities ``alpha / S``, its gradient with
    respect to ``alpha`` in closed form computed in the forward pass.

    With ``D_nk = (2 I_nk + s) / d_nk``, ``d_nk = P_nk + Y_nk + s`` (``I``, ``P``, ``Y``: sums over
    pixels of ``p y``, ``p`` and ``y``) and ``L = 1 - mean D``: ``dL / dp = (D - 2 y) / (N K d)``;
    through ``p = alpha / S``: ``dL / d alpha_j = (g_j - sum_k g_k p_k) / S``. Autograd would keep a
    dozen full-size intermediates for the same numbers.
    """

    @staticmethod
    def forward(ctx, alpha: torch.Tensor, y: torch.Tensor, smooth: float) -> torch.Tensor:
        strength = alpha.sum(dim=1, keepdim=True)
        probs = alpha / strength
        dims = tuple(range(2, alpha.ndim))
        intersection = (probs * y).sum(dim=dims)
        denominator = probs.sum(dim=dims) + y.sum(dim=dims) + smooth
        dice = (2.0 * intersection + smooth) / denominator
        scale = 1.0 / (dice.numel() * denominator)  # (N, K)
        view = (*dice.shape, *([1] * len(dims)))
        # g = (D - 2 y) / (N K d), built in the buffer of y's copy
        grad = y.mul(-2.0).add_(dice.view(view)).mul_(scale.view(view))
        dot = (grad * probs).sum(dim=1, keepdim=True)
        ctx.save_for_backward(grad.sub_(dot).div_(strength))
        return 1.0 - dice.mean()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None


def _soft_dice_of_alpha(alpha: torch.Tensor, targets: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """``soft_dice_loss(alpha / S, targets)``, fused on CPU (see :class:`_SoftDiceOfAlpha`)."""
    if alpha.device.type != "cpu":
        return soft_dice_loss(alpha / alpha.sum(dim=1, keepdim=True), targets, smooth=smooth)
    return _SoftDiceOfAlpha.apply(alpha, _one_hot(targets, alpha.shape[1]).to(alpha.dtype), float(smooth))


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
        coefficient = self.kl_weight * annealing_coefficient(self.epoch, self.annealing_epochs)
        if alpha.shape[1] == 2:  # binary masks (and binary classes): closed forms, no one-hot
            loss = _binary_loss(alpha, targets, self.kind, coefficient)
        else:
            y = _one_hot(targets, alpha.shape[1]).to(alpha.dtype)
            digamma_alpha = torch.digamma(alpha) if coefficient > 0 or self.kind == "digamma" else None
            if self.kind == "digamma" and digamma_alpha is not None:  # shares psi(alpha) with the KL term
                data = torch.digamma(alpha.sum(dim=1)) - (y * digamma_alpha).sum(dim=1)
            else:
                data = evidential_data_term(alpha, targets, self.kind)
            loss = data.mean()
            if coefficient > 0 and digamma_alpha is not None:
                loss = loss + coefficient * _kl_of_wrong_evidence(alpha, y, digamma_alpha).mean()
        if self.dice_weight > 0 and alpha.ndim > 2:
            loss = loss + self.dice_weight * _soft_dice_of_alpha(alpha, targets)
        return loss

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.from_alpha(alpha_from_outputs(outputs, self.evidence), targets)
