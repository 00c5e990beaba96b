"""Evidence functions and the quantities of a Dirichlet output.

Torch part (used while training and predicting): :func:`evidence` and
:func:`alpha_from_outputs` turn raw network outputs into concentrations. NumPy part (used by the
analyses on a prediction file's ``alpha``): expected probability, vacuity ``u = K / S``,
dissonance, expected entropy (aleatoric part) and the entropy of the expected probability
(total), whose difference is the mutual information (epistemic part).

The class axis is ``axis`` (1 for ``(N, K)`` and ``(N, K, H, W)``); all entropies in nats.

References
----------
Sensoy, Kaplan, Kandemir (2018), Evidential deep learning to quantify classification
uncertainty, NeurIPS. Jøsang (2016), Subjective Logic; Zhao, Chen, Hu & Cho (2020), Uncertainty aware
semi-supervised learning on graph data, NeurIPS (vacuity and dissonance). Malinin & Gales (2018),
Predictive uncertainty estimation via prior networks (expected entropy, mutual information).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import digamma

from medsure.core.probability import entropy
from medsure.validation import check_array, check_choice, input_error

if TYPE_CHECKING:  # torch is imported where a tensor is made, so numpy-only analyses start without it
    import torch

EVIDENCE_FUNCTIONS = ("relu", "softplus", "exp")
# exp evidence is clamped like Sensoy et al.'s reference: exp(10) ~ 2.2e4 is already "certain",
# and an unclamped exp overflows float32 (inf evidence, NaN gradients) at outputs above ~88
_EXP_CLAMP = 10.0


def evidence(outputs: torch.Tensor, function: str = "relu") -> torch.Tensor:
    """Non-negative evidence ``e = f(outputs)``.

    Parameters
    ----------
    outputs : float tensor, any shape (``(N, K)`` or ``(N, K, H, W)``)
    function : "relu", "softplus" or "exp" (``exp(clamp(z, -10, 10))``)

    Returns
    -------
    tensor of the shape of ``outputs``, values ``>= 0``
    """
    import torch
    import torch.nn.functional as F

    check_choice("evidence function", function, EVIDENCE_FUNCTIONS)
    if function == "relu":
        return F.relu(outputs)
    if function == "softplus":
        return F.softplus(outputs)
    return torch.exp(torch.clamp(outputs, -_EXP_CLAMP, _EXP_CLAMP))


def alpha_from_outputs(outputs: torch.Tensor, function: str = "relu") -> torch.Tensor:
    """Dirichlet concentrations ``alpha = f(outputs) + 1`` (every value ``>= 1``)."""
    return evidence(outputs, function) + 1.0


def check_concentration(what: str, alpha: np.ndarray | torch.Tensor, axis: int = 1) -> np.ndarray:
    """``alpha`` as a float64 array, refused unless finite, > 0 and with >= 2 classes on ``axis``.

    Parameters
    ----------
    what : the name the user knows (``"prediction key 'alpha'"``)
    alpha : ``(N, K)`` or ``(N, K, H, W)`` concentrations
    axis : the class axis
    """
    torch_module = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch_module is not None and isinstance(alpha, torch_module.Tensor):
        alpha = alpha.detach().cpu().numpy()
    arr = check_array(what, alpha, dtype_kind="f")
    if arr.ndim < 2 or arr.shape[axis] < 2:
        raise input_error(what, f"shape {arr.shape}", f"at least 2 classes on axis {axis}", raw=True)
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise input_error(
            what,
            f"{int(bad.sum())} value(s) <= 0 or not finite (e.g. {arr[first]!r} at {first})",
            "Dirichlet concentrations alpha > 0",
            "an evidential model writes alpha = evidence + 1 >= 1; logits belong under 'logits'",
            raw=True,
        )
    return arr.astype(np.float64, copy=False)


def expected_probability(alpha: np.ndarray, axis: int = 1) -> np.ndarray:
    """``alpha / S``, the mean of the Dirichlet (sums to 1 along ``axis``)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    return alpha / alpha.sum(axis=axis, keepdims=True)


def vacuity(alpha: np.ndarray, axis: int = 1) -> np.ndarray:
    """Uncertainty mass ``u = K / S`` in ``(0, 1]``; ``axis`` removed. 1 means no evidence."""
    alpha = np.asarray(alpha, dtype=np.float64)
    return alpha.shape[axis] / alpha.sum(axis=axis)


def dissonance(alpha: np.ndarray, axis: int = 1) -> np.ndarray:
    """Dissonance of the subjective opinion of ``alpha`` (Jøsang 2016; Zhao et al. 2020).

    With beliefs ``b_k = (alpha_k - 1) / S``,
    ``diss = sum_k b_k * sum_{j != k} b_j Bal(b_j, b_k) / sum_{j != k} b_j`` and
    ``Bal(b_j, b_k) = 1 - |b_j - b_k| / (b_j + b_k)`` (0 when both are 0). High when much
    evidence supports several classes equally (conflict); 0 for evidence on one class only.

    Returns
    -------
    ndarray with ``axis`` removed, values in ``[0, 1)``
    """
    alpha = np.moveaxis(np.asarray(alpha, dtype=np.float64), axis, -1)
    belief = (alpha - 1.0) / alpha.sum(axis=-1, keepdims=True)
    bj, bk = belief[..., :, None], belief[..., None, :]  # (..., K, K): [j, k]
    total = bj + bk
    with np.errstate(invalid="ignore", divide="ignore"):
        balance = np.where(total > 0, 1.0 - np.abs(bj - bk) / np.where(total > 0, total, 1.0), 0.0)
    k = alpha.shape[-1]
    off = 1.0 - np.eye(k)
    numerator = ((bj * balance) * off).sum(axis=-2)  # sum over j != k, per k
    denominator = (bj * off).sum(axis=-2)
    ratio = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    return (belief * ratio).sum(axis=-1)


def expected_entropy(alpha: np.ndarray, axis: int = 1) -> np.ndarray:
    """``E_{p ~ Dir(alpha)}[H(p)] = -sum_k (alpha_k / S) (psi(alpha_k + 1) - psi(S + 1))`` (nats).

    The aleatoric part of the entropy decomposition; ``axis`` removed.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    strength = alpha.sum(axis=axis, keepdims=True)
    return -(alpha / strength * (digamma(alpha + 1.0) - digamma(strength + 1.0))).sum(axis=axis)


@dataclass(frozen=True)
class DirichletSummary:
    """Every per-case (or per-pixel) quantity of a Dirichlet output; arrays without the class axis
    except ``probs``.

    Attributes
    ----------
    probs : expected probability ``alpha / S``, class axis kept
    strength : ``S = sum_k alpha_k``
    vacuity : ``u = K / S``
    dissonance : see :func:`dissonance`
    expected_entropy : aleatoric part ``E[H(p)]``
    total_entropy : ``H(alpha / S)``, entropy of the expected probability
    mutual_information : ``total_entropy - expected_entropy`` (epistemic part, >= 0)
    """

    probs: np.ndarray
    strength: np.ndarray
    vacuity: np.ndarray
    dissonance: np.ndarray
    expected_entropy: np.ndarray
    total_entropy: np.ndarray
    mutual_information: np.ndarray


def dirichlet_summary(alpha: np.ndarray, axis: int = 1) -> DirichletSummary:
    """All quantities of :class:`DirichletSummary` for concentrations ``alpha`` (checked > 0)."""
    alpha = check_concentration("alpha", alpha, axis=axis)
    probs = expected_probability(alpha, axis)
    total = entropy(probs, axis=axis)
    aleatoric = expected_entropy(alpha, axis)
    return DirichletSummary(
        probs=probs,
        strength=alpha.sum(axis=axis),
        vacuity=vacuity(alpha, axis),
        dissonance=dissonance(alpha, axis),
        expected_entropy=aleatoric,
        total_entropy=total,
        # E[H] <= H(E[p]) by concavity; clip the last-bit rounding so MI is never -1e-17
        mutual_information=np.maximum(total - aleatoric, 0.0),
    )


@dataclass(frozen=True)
class JointReliability:
    """Per-image reliability of a joint model from both tasks (Ren et al. 2023); arrays ``(N,)``.

    Attributes
    ----------
    class_u : vacuity ``K / S`` of the image-class Dirichlet
    seg_u : mean pixel vacuity over the image
    seg_u_foreground : mean pixel vacuity over the predicted foreground (argmax != 0); NaN for an
        image with no predicted foreground (undefined, as in :mod:`medsure.core`)
    """

    class_u: np.ndarray
    seg_u: np.ndarray
    seg_u_foreground: np.ndarray


def joint_reliability(class_alpha: np.ndarray, seg_alpha: np.ndarray) -> JointReliability:
    """Image-level reliability of a joint prediction.

    Parameters
    ----------
    class_alpha : ``(N, K)`` concentrations of the image class
    seg_alpha : ``(N, K_seg, H, W)`` per-pixel concentrations (class 0 is the background)
    """
    class_alpha = check_concentration("class alpha", class_alpha)
    seg_alpha = check_concentration("segmentation alpha", seg_alpha)
    if seg_alpha.ndim != 4 or seg_alpha.shape[0] != class_alpha.shape[0]:
        raise input_error(
            "segmentation alpha",
            f"shape {seg_alpha.shape}",
            f"(N, K_seg, H, W) with N = {class_alpha.shape[0]} like the class alpha",
            raw=True,
        )
    pixel_u = vacuity(seg_alpha)  # (N, H, W)
    foreground = seg_alpha.argmax(axis=1) != 0
    counts = foreground.sum(axis=(1, 2))
    sums = np.where(foreground, pixel_u, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        fg_mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return JointReliability(class_u=vacuity(class_alpha), seg_u=pixel_u.mean(axis=(1, 2)), seg_u_foreground=fg_mean)
