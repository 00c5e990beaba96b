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

from medsure.artifact import Predictions
from medsure.core import entropy as core_entropy
from medsure.core import entropy_decomposition, softmax
from medsure.validation import check_choice, input_error

UNCERTAINTY_KINDS = ("entropy", "expected_entropy", "mutual_information", "one_minus_max_prob", "evidential_u")
Reduction = Literal["mean", "foreground_mean", "foreground_weighted", "top_percent", "max"]
#: every image-level reduction of :func:`image_uncertainty`, in the order reports list them
REDUCTIONS: tuple[str, ...] = ("mean", "foreground_mean", "foreground_weighted", "top_percent", "max")
#: The analyses' default reduction, chosen from evidence (benchmarks/segmentation_shift.md: 3 shift pairs
#: x 2 training seeds x single pass / MC dropout, plus a near-null control). No reduction wins every
#: shift: the foreground reductions lead on Kvasir -> CVC and synthetic JSRT, ``mean`` on ISIC -> PH2.
#: ``foreground_mean`` is the most robust: shift AUROC tied with ``foreground_weighted`` (mean 0.643 vs
#: 0.645, worst 0.426 vs 0.420; ``mean`` 0.663 / 0.396), fewest false alarms on the null control (0.516
#: vs 0.581 / 0.616), Dice prediction far better than ``mean``'s. ``segment-eval --shift`` reports all.
DEFAULT_REDUCTION = "foreground_mean"
# fraction of an image's pixels averaged by reduce="top_percent" (its most uncertain 1 %)
TOP_FRACTION = 0.01

# Upper bound on float32 values per temporary when processing images in chunks (~64 MB).
_CHUNK_VALUES = 16_000_000


def entropy(probs: np.ndarray, axis: int = 1) -> np.ndarray:
    """Shannon entropy (nats) of ``probs`` along the class ``axis``, float32 (per-pixel maps).

    :func:`medsure.core.entropy` with ``dtype=float32``.

    Parameters
    ----------
    probs : ndarray, e.g. (N, K, H, W), non-negative, summing to 1 along ``axis``
    axis : the class axis

    Returns
    -------
    ndarray with ``axis`` removed, e.g. (N, H, W), float32, in [0, log K].
    """
    return core_entropy(probs, axis=axis, dtype=np.float32)


def _decomposition(sample_probs: np.ndarray):
    """:func:`medsure.core.entropy_decomposition` of ``(T, N, K, H, W)`` probabilities, float32."""
    _check_samples(sample_probs)
    return entropy_decomposition(sample_probs, sample_axis=0, class_axis=2, dtype=np.float32)


def predictive_entropy(sample_probs: np.ndarray) -> np.ndarray:
    """Entropy of the mean over samples ``H[mean_t p_t]``: ``(T, N, K, H, W)`` → ``(N, H, W)``."""
    return _decomposition(sample_probs).total


def expected_entropy(sample_probs: np.ndarray) -> np.ndarray:
    """Mean over samples of the per-sample entropy ``mean_t H[p_t]`` (aleatoric part):
    ``(T, N, K, H, W)`` → ``(N, H, W)``."""
    return _decomposition(sample_probs).aleatoric


def mutual_information(sample_probs: np.ndarray) -> np.ndarray:
    """Mutual information between label and sample index (epistemic part, BALD):
    ``(T, N, K, H, W)`` → ``(N, H, W)``.

    ``MI = H[mean_t p_t] - mean_t H[p_t]``, clipped at 0 against float rounding. It is exactly 0
    when all T samples agree (and always for T = 1).
    """
    return _decomposition(sample_probs).epistemic


def uncertainty_maps(pred: Predictions) -> dict[str, np.ndarray]:
    """All per-pixel maps of a segmentation artifact.

    Returns
    -------
    dict with ``"probabilities"`` (N, K, H, W) and, each (N, H, W): ``"entropy"`` (predictive),
    ``"expected_entropy"``, ``"mutual_information"`` (zero without a T axis),
    ``"one_minus_max_prob"``, and ``"predicted"`` (int64 argmax labels); for an evidential
    artifact (``alpha``) also ``"evidential_u"``, the pixel vacuity ``K / S`` (mean over T).
    """
    _check_segmentation(pred)
    logits = pred.sample_logits()
    n, k, h, w = logits.shape[1:]
    out: dict[str, np.ndarray] = {
        "probabilities": np.empty((n, k, h, w), np.float32),
        **{
            name: np.empty((n, h, w), np.float32)
            for name in ("entropy", "expected_entropy", "mutual_information", "one_minus_max_prob")
        },
        "predicted": np.empty((n, h, w), np.int64),
    }
    # Chunks of images bound the (T, chunk, K, H, W) temporaries; pixels stay vectorised.
    step = max(1, int(_CHUNK_VALUES // max(1, logits.shape[0] * k * h * w)))
    for start in range(0, n, step):
        part = slice(start, min(n, start + step))
        parts = _decomposition(softmax(logits[:, part].astype(np.float32), axis=2))
        probs = parts.mean_probs
        out["probabilities"][part] = probs
        out["entropy"][part] = parts.total
        out["expected_entropy"][part] = parts.aleatoric
        out["mutual_information"][part] = parts.epistemic
        out["one_minus_max_prob"][part] = 1.0 - probs.max(axis=1)
        out["predicted"][part] = probs.argmax(axis=1)
        if pred.evidential:  # logits are log alpha: u = K / sum_k alpha_k per pixel
            if "evidential_u" not in out:
                out["evidential_u"] = np.empty((n, h, w), np.float32)
            strength = np.exp(logits[:, part].astype(np.float32)).sum(axis=2)
            out["evidential_u"][part] = (k / strength).mean(axis=0)
    return out


def uncertainty_map(pred: Predictions, kind: str = "entropy") -> np.ndarray:
    """One per-pixel uncertainty map (N, H, W); ``kind`` in :data:`UNCERTAINTY_KINDS`."""
    if kind not in UNCERTAINTY_KINDS:
        check_choice("uncertainty kind", kind, UNCERTAINTY_KINDS)
    if kind == "mutual_information" and not pred.has_samples:
        raise input_error(
            "uncertainty kind",
            kind,
            "logits with a sample axis (T, N, K, H, W) for it",
            "MC dropout, ensemble or TTA predictions carry one",
        )
    if kind == "evidential_u" and not pred.evidential:
        raise input_error("uncertainty kind", kind, "an evidential prediction file (with alpha) for it")
    return uncertainty_maps(pred)[kind]


def image_uncertainty(
    umap: np.ndarray,
    predicted: np.ndarray | None = None,
    *,
    reduce: Reduction = "mean",
    foreground_prob: np.ndarray | None = None,
) -> np.ndarray:
    """Aggregate a per-pixel map to one score per image.

    Which reduction detects a distribution shift depends on the shift (measured in
    ``benchmarks/segmentation_shift.md``); ``medsure segment-eval --shift`` therefore reports
    the shift AUROC of every reduction in :data:`REDUCTIONS`, and the analyses default to
    :data:`DEFAULT_REDUCTION` (this pure function keeps ``"mean"``, which needs no other input).

    Parameters
    ----------
    umap : ndarray (N, H, W)
    predicted : int ndarray (N, H, W) of predicted labels; needed for ``"foreground_mean"``
    reduce : one of :data:`REDUCTIONS`:

        ``"mean"``
            over all pixels (background included: a shift that makes the whole image look
            strange shows up here);
        ``"foreground_mean"``
            over the pixels predicted as any foreground label (label > 0). An image with no
            predicted foreground falls back to its mean over all pixels (there is no structure
            to be unsure about, but the model may have missed one, which shows up as
            background uncertainty);
        ``"foreground_weighted"``
            the mean weighted by each pixel's foreground probability ``1 - p(background)``, so
            a structure the model half-sees but does not predict (a likely miss) still
            dominates the score instead of being diluted by confident background;
        ``"top_percent"``
            the mean of the image's most uncertain :data:`TOP_FRACTION` (1 %) of pixels (at
            least one pixel): a smooth maximum, independent of the predicted area;
        ``"max"``
            the single most uncertain pixel.
    foreground_prob : ndarray (N, H, W), ``1 - p(background)``; needed for ``"foreground_weighted"``

    Returns
    -------
    ndarray (N,), float64
    """
    umap = np.asarray(umap)
    if umap.ndim != 3:
        raise input_error("uncertainty map", f"shape {umap.shape}", "(N, H, W)", raw=True)
    check_choice("reduce", reduce, REDUCTIONS)
    flat = umap.reshape(umap.shape[0], -1).astype(np.float64)
    overall = flat.mean(axis=1)
    if reduce == "mean":
        return overall
    if reduce == "max":
        return flat.max(axis=1)
    if reduce == "top_percent":
        top = max(1, round(TOP_FRACTION * flat.shape[1]))
        return np.partition(flat, flat.shape[1] - top, axis=1)[:, flat.shape[1] - top :].mean(axis=1)
    if reduce == "foreground_weighted":
        if foreground_prob is None or np.shape(foreground_prob) != umap.shape:
            raise input_error(
                "foreground_prob",
                None if foreground_prob is None else np.asarray(foreground_prob),
                f"foreground probabilities of shape {umap.shape} for reduce='foreground_weighted'",
            )
        weight = np.asarray(foreground_prob, dtype=np.float64).reshape(flat.shape)
        total = weight.sum(axis=1)
        weighted = (flat * weight).sum(axis=1) / np.where(total > 0, total, 1.0)
        return np.where(total > 0, weighted, overall)  # no foreground belief at all: plain mean
    if predicted is None or np.shape(predicted) != umap.shape:
        raise input_error(
            "predicted",
            None if predicted is None else np.asarray(predicted),
            f"predicted labels of shape {umap.shape} for reduce='foreground_mean'",
        )
    fg = np.asarray(predicted).reshape(flat.shape) > 0
    count = fg.sum(axis=1)
    fg_mean = (flat * fg).sum(axis=1) / np.maximum(count, 1)
    return np.where(count > 0, fg_mean, overall)


def _check_samples(sample_probs: np.ndarray) -> None:
    if np.ndim(sample_probs) != 5:
        raise input_error("sample probabilities", f"shape {np.shape(sample_probs)}", "(T, N, K, H, W)", raw=True)


def _check_segmentation(pred: Predictions) -> None:
    if pred.task != "segmentation":
        raise input_error("predictions", f"a {pred.task} artifact", "a segmentation artifact", raw=True)
