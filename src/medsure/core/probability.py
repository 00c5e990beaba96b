"""Softmax, Shannon entropy and the entropy decomposition of a sample axis (pure numpy).

All entropies are in nats (natural logarithm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

from medsure.validation import input_error

__all__ = ["softmax", "entropy", "entropy_decomposition", "EntropyDecomposition"]

# Keeps 0 * log 0 = 0 without warnings: probabilities below this contribute < 3e-11 nats each.
# 1e-12 is a normal float32 number, so float32 and float64 entropies share the convention.
_TINY = 1e-12


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax ``exp(x - max) / sum exp(x - max)`` along ``axis``.

    Parameters
    ----------
    x : float ndarray, any shape (e.g. logits ``(N, K)`` or ``(T, N, K, H, W)``)
    axis : the class axis

    Returns
    -------
    ndarray of the shape and floating dtype of ``x`` (float32 stays float32), non-negative and
    summing to 1 along ``axis``. ``x`` is not modified. Equals ``scipy.special.softmax``.
    """
    x = np.asarray(x)
    shifted = x - np.max(x, axis=axis, keepdims=True)  # a new array: the input stays untouched
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def entropy(probs: np.ndarray, axis: int = -1, *, dtype: DTypeLike = np.float64) -> np.ndarray:
    """Shannon entropy ``-sum_k p_k log p_k`` (nats) along the class ``axis``.

    Parameters
    ----------
    probs : ndarray, any shape, non-negative and summing to 1 along ``axis``
    axis : the class axis
    dtype : precision of the computation and of the result. float64 for per-case scores
        (CSFs); float32 for large per-pixel maps ``(N, K, H, W)``, where it halves memory.

    Returns
    -------
    ndarray of ``dtype`` with ``axis`` removed, values in ``[0, log K]``. ``0 log 0 = 0``
    (probabilities are floored at 1e-12 inside the logarithm only). Equals
    ``scipy.stats.entropy(probs, axis=axis)`` for normalised ``probs``.
    """
    p = np.asarray(probs, dtype=dtype)
    return -(p * np.log(np.maximum(p, _TINY))).sum(axis=axis)


@dataclass(frozen=True)
class EntropyDecomposition:
    """Total = aleatoric + epistemic uncertainty of a predictive distribution over samples.

    Attributes (shape of the input without its sample and class axes)
    ----------
    mean_probs : the predictive distribution ``mean_t p_t`` (keeps the class axis)
    total : predictive entropy ``H[mean_t p_t]``
    aleatoric : expected entropy ``mean_t H[p_t]``
    epistemic : mutual information ``total - aleatoric`` between the label and the sample
        index (BALD), clipped at 0 against float rounding (it is >= 0 by Jensen's inequality)
    """

    mean_probs: np.ndarray
    total: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray


def entropy_decomposition(
    sample_probs: np.ndarray, *, sample_axis: int = 0, class_axis: int = -1, dtype: DTypeLike = np.float64
) -> EntropyDecomposition:
    """Split the predictive entropy of a sample axis (MC dropout, ensemble, TTA) into parts.

    ``H[mean_t p_t] = mean_t H[p_t] + MI`` (Depeweg et al. 2018; Gal et al. 2017, BALD).

    Parameters
    ----------
    sample_probs : ndarray with a sample axis T and a class axis K, e.g. ``(T, N, K)`` or
        ``(T, N, K, H, W)``; per-sample probabilities summing to 1 along ``class_axis``
    sample_axis, class_axis : the two axes (negative values count from the end)
    dtype : precision of the computation (see :func:`entropy`)

    Returns
    -------
    EntropyDecomposition; ``mean_probs`` has the sample axis removed, the three entropies have
    both axes removed. The epistemic part is exactly 0 when all samples agree (and for T = 1).
    """
    p = np.asarray(sample_probs, dtype=dtype)
    sample_axis = sample_axis % p.ndim
    class_axis = class_axis % p.ndim
    if sample_axis == class_axis:
        raise input_error("sample_axis and class_axis", (sample_axis, class_axis), "two different axes")
    mean_probs = p.mean(axis=sample_axis)
    total = entropy(mean_probs, axis=class_axis - (class_axis > sample_axis), dtype=dtype)
    aleatoric = entropy(p, axis=class_axis, dtype=dtype).mean(axis=sample_axis - (sample_axis > class_axis))
    epistemic = np.maximum(total - aleatoric, 0.0).astype(total.dtype, copy=False)
    return EntropyDecomposition(mean_probs=mean_probs, total=total, aleatoric=aleatoric, epistemic=epistemic)
