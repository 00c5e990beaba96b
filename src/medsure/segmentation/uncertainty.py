"""Per-pixel uncertainty maps and their image-level aggregates (pure functions, no I/O).

All maps use natural logarithms (nats). For a ``Predictions`` with a T axis (MC dropout,
ensemble members, TTA views) the predictive distribution is the mean over T of the per-sample
softmax, and the predictive entropy splits into the expected entropy (aleatoric part) plus the
mutual information between the prediction and the sample index (epistemic part)::

    H[mean_t p_t] = mean_t H[p_t] + MI

Shapes: ``N`` images, ``K`` labels (background included), ``H x W`` pixels, ``T`` samples.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from medsure.artifact import Predictions, softmax
from medsure.errors import MedsureInputError

UNCERTAINTY_KINDS = ("entropy", "expected_entropy", "mutual_information", "one_minus_max_prob")
Reduction = Literal["mean", "foreground_mean", "foreground_weighted"]

# Keeps 0 * log 0 = 0 without warnings; probabilities below this contribute < 1e-11 nats.
_TINY = 1e-12
# Upper bound on float32 values per temporary when processing images in chunks (~64 MB).
_CHUNK_VALUES = 16_000_000


def entropy(probs: np.ndarray, axis: int = 1) -> np.ndarray:
    """Shannon entropy (nats) of ``probs`` along the class ``axis``.

    Parameters
    ----------
    probs : ndarray, e.g. (N, K, H, W), non-negative, summing to 1 along ``axis``
    axis : the class axis

    Returns
    -------
    ndarray with ``axis`` removed, e.g. (N, H, W), float32, in [0, log K].
    """
    probs = np.asarray(probs, dtype=np.float32)
    return -(probs * np.log(np.maximum(probs, _TINY))).sum(axis=axis)


def predictive_entropy(sample_probs: np.ndarray) -> np.ndarray:
    """Entropy of the mean over samples: ``H[mean_t p_t]``.

    Parameters
    ----------
    sample_probs : ndarray (T, N, K, H, W)

    Returns
    -------
    ndarray (N, H, W)
    """
    _check_samples(sample_probs)
    return entropy(sample_probs.mean(axis=0), axis=1)


def expected_entropy(sample_probs: np.ndarray) -> np.ndarray:
    """Mean over samples of the per-sample entropy: ``mean_t H[p_t]`` (aleatoric part).

    Parameters
    ----------
    sample_probs : ndarray (T, N, K, H, W)

    Returns
    -------
    ndarray (N, H, W)
    """
    _check_samples(sample_probs)
    return entropy(sample_probs, axis=2).mean(axis=0)


def mutual_information(sample_probs: np.ndarray) -> np.ndarray:
    """Mutual information between label and sample index (epistemic part, BALD).

    ``MI = H[mean_t p_t] - mean_t H[p_t]``, clipped at 0 against float rounding. It is exactly 0
    when all T samples agree (and always for T = 1).

    Parameters
    ----------
    sample_probs : ndarray (T, N, K, H, W)

    Returns
    -------
    ndarray (N, H, W)
    """
    return np.maximum(predictive_entropy(sample_probs) - expected_entropy(sample_probs), 0.0)


def uncertainty_maps(pred: Predictions) -> dict[str, np.ndarray]:
    """All per-pixel maps of a segmentation artifact.

    Returns
    -------
    dict with ``"probabilities"`` (N, K, H, W) and, each (N, H, W): ``"entropy"`` (predictive),
    ``"expected_entropy"``, ``"mutual_information"`` (zero without a T axis),
    ``"one_minus_max_prob"``, and ``"predicted"`` (int64 argmax labels).
    """
    _check_segmentation(pred)
    logits = pred.sample_logits()
    n, k, h, w = logits.shape[1:]
    out = {
        "probabilities": np.empty((n, k, h, w), np.float32),
        **{name: np.empty((n, h, w), np.float32)
           for name in ("entropy", "expected_entropy", "mutual_information", "one_minus_max_prob")},
        "predicted": np.empty((n, h, w), np.int64),
    }
    # Chunks of images bound the (T, chunk, K, H, W) temporaries; pixels stay vectorised.
    step = max(1, int(_CHUNK_VALUES // max(1, logits.shape[0] * k * h * w)))
    for start in range(0, n, step):
        part = slice(start, min(n, start + step))
        sample_probs = softmax(logits[:, part].astype(np.float32), axis=2)
        probs = sample_probs.mean(axis=0)
        total = entropy(probs, axis=1)
        aleatoric = entropy(sample_probs, axis=2).mean(axis=0)
        out["probabilities"][part] = probs
        out["entropy"][part] = total
        out["expected_entropy"][part] = aleatoric
        out["mutual_information"][part] = np.maximum(total - aleatoric, 0.0)
        out["one_minus_max_prob"][part] = 1.0 - probs.max(axis=1)
        out["predicted"][part] = probs.argmax(axis=1)
    return out


def uncertainty_map(pred: Predictions, kind: str = "entropy") -> np.ndarray:
    """One per-pixel uncertainty map (N, H, W); ``kind`` in :data:`UNCERTAINTY_KINDS`."""
    if kind not in UNCERTAINTY_KINDS:
        raise MedsureInputError(f"uncertainty kind {kind!r} unknown, expected one of {UNCERTAINTY_KINDS}")
    if kind == "mutual_information" and not pred.has_samples:
        raise MedsureInputError(
            "uncertainty 'mutual_information' needs logits with a sample axis (T, N, K, H, W): "
            "MC dropout, ensemble or TTA predictions")
    return uncertainty_maps(pred)[kind]


def image_uncertainty(umap: np.ndarray, predicted: np.ndarray | None = None, *,
                      reduce: Reduction = "mean", foreground_prob: np.ndarray | None = None) -> np.ndarray:
    """Aggregate a per-pixel map to one score per image.

    Parameters
    ----------
    umap : ndarray (N, H, W)
    predicted : int ndarray (N, H, W) of predicted labels; needed for ``"foreground_mean"``
    reduce : ``"mean"`` over all pixels, or ``"foreground_mean"`` over the pixels predicted as
        any foreground label (label > 0). An image with no predicted foreground falls back to
        its mean over all pixels (there is no structure to be unsure about, but the model may
        have missed one, which shows up as background uncertainty); or ``"foreground_weighted"``:
        the mean weighted by each pixel's foreground probability ``1 - p(background)``, so a
        structure the model half-sees but does not predict (a likely miss) still dominates the
        score instead of being diluted by confident background.
    foreground_prob : ndarray (N, H, W), ``1 - p(background)``; needed for ``"foreground_weighted"``

    Returns
    -------
    ndarray (N,), float64
    """
    umap = np.asarray(umap)
    if umap.ndim != 3:
        raise MedsureInputError(f"uncertainty map shape {umap.shape}, expected (N, H, W)")
    flat = umap.reshape(umap.shape[0], -1).astype(np.float64)
    overall = flat.mean(axis=1)
    if reduce == "mean":
        return overall
    if reduce == "foreground_weighted":
        if foreground_prob is None or np.shape(foreground_prob) != umap.shape:
            raise MedsureInputError(
                f"reduce='foreground_weighted' needs foreground probabilities of shape {umap.shape}, "
                f"got {None if foreground_prob is None else np.shape(foreground_prob)}")
        weight = np.asarray(foreground_prob, dtype=np.float64).reshape(flat.shape)
        total = weight.sum(axis=1)
        weighted = (flat * weight).sum(axis=1) / np.where(total > 0, total, 1.0)
        return np.where(total > 0, weighted, overall)  # no foreground belief at all: plain mean
    if reduce != "foreground_mean":
        raise MedsureInputError(f"reduce={reduce!r}, expected 'mean', 'foreground_mean' or 'foreground_weighted'")
    if predicted is None or np.shape(predicted) != umap.shape:
        raise MedsureInputError(
            f"reduce='foreground_mean' needs predicted labels of shape {umap.shape}, "
            f"got {None if predicted is None else np.shape(predicted)}")
    fg = np.asarray(predicted).reshape(flat.shape) > 0
    count = fg.sum(axis=1)
    fg_mean = (flat * fg).sum(axis=1) / np.maximum(count, 1)
    return np.where(count > 0, fg_mean, overall)


def _check_samples(sample_probs: np.ndarray) -> None:
    if np.ndim(sample_probs) != 5:
        raise MedsureInputError(
            f"sample probabilities shape {np.shape(sample_probs)}, expected (T, N, K, H, W)")


def _check_segmentation(pred: Predictions) -> None:
    if pred.task != "segmentation":
        raise MedsureInputError(f"expected a segmentation artifact, got task {pred.task!r}")
