"""Randomized smoothing over a model *callable*: Cohen et al. (2019) for classifiers, SegCertify
(Fischer et al. 2021) for segmenters, and a sequential variant that stops an image early.

The model is any callable taking a float tensor ``(B, C, H, W)`` (images in ``[0, 1]`` plus
Gaussian noise of standard deviation ``sigma``, not clipped, as in the published algorithms) and
returning logits ``(B, K)`` or ``(B, K, H, W)``; a denoiser is composed into that callable by the
caller. Noise samples go through the model in batches; counts and tests are vectorised over
pixels (no Python loop over pixels or samples).

Randomness: every image gets its own ``torch.Generator`` (:func:`image_seed` of the run seed and
the image's position), and noise is drawn one sample at a time from it, so an image's
certificate does not depend on the batch size, on ``--limit`` or on the other images.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from medsure.certify.stats import (
    binomial_pvalue_greater,
    binomial_pvalue_two_sided,
    clopper_pearson_lower,
    never_rejected,
    reject,
    sequential_pvalues,
    spending_weights,
)
from medsure.validation import check_choice, check_float, check_int, input_error

__all__ = [
    "ABSTAIN",
    "Model",
    "check_certify_params",
    "image_seed",
    "segmentation_radius",
    "classification_radius",
    "noisy_labels",
    "smoothed_predict",
    "ClassCertificate",
    "certify_classification",
    "PixelCertificate",
    "certify_segmentation",
]

#: the label of an abstained image or pixel
ABSTAIN = -1

Model = Callable[[torch.Tensor], torch.Tensor]


def check_certify_params(
    *, sigma: float, n0: int, n: int, alpha: float, tau: float | None = None, batch_size: int | None = None
) -> None:
    """Raise one clear error for a bad smoothing parameter (sigma > 0, n0 and n >= 1, alpha and tau)."""
    check_float(
        "sigma", sigma, low=0.0, closed="neither", hint="the noise level is a standard deviation in [0, 1] units"
    )
    check_int("n0", n0, low=1)
    check_int("n", n, low=1)
    check_float("alpha", alpha, low=0.0, high=1.0, closed="neither")
    if tau is not None:
        check_float("tau", tau, low=0.5, high=1.0, closed="neither", hint="a pixel is certified when p > tau > 1/2")
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` in a run seeded ``seed`` (independent streams per image)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def segmentation_radius(sigma: float, tau: float) -> float:
    """SegCertify's certified L2 radius of every certified pixel: ``sigma * Phi^-1(tau)``."""
    return float(sigma * norm.ppf(tau))


def classification_radius(sigma: float, p_lower: np.ndarray) -> np.ndarray:
    """Cohen's certified L2 radius ``sigma * Phi^-1(pA)``; 0 where ``pA <= 1/2`` (abstain)."""
    p_lower = np.asarray(p_lower, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(p_lower > 0.5, sigma * norm.ppf(p_lower), 0.0)


def noisy_labels(
    model: Model,
    image: torch.Tensor,
    num: int,
    *,
    sigma: float,
    generator: torch.Generator,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """Arg-max labels of the model on ``num`` noisy copies of one image, in batches.

    Parameters
    ----------
    model : callable, ``(B, C, H, W)`` -> logits ``(B, K[, H, W])``
    image : float tensor ``(C, H, W)`` in ``[0, 1]``, on CPU
    num : noise samples
    sigma : noise standard deviation
    generator : CPU generator; one ``(C, H, W)`` draw per sample, so the stream does not depend
        on ``batch_size``
    batch_size : noisy copies per forward pass
    device : where the model runs

    Yields
    ------
    int64 tensor ``(b,)`` or ``(b, H, W)`` on CPU, ``b <= batch_size``, ``num`` rows in all.
    """
    shape = tuple(image.shape)
    done = 0
    while done < num:
        b = min(batch_size, num - done)
        noise = torch.empty((b, *shape))
        for j in range(b):  # one draw per sample: the stream is the same for every batch size
            torch.randn(shape, generator=generator, out=noise[j])
        x = (image.unsqueeze(0) + sigma * noise).to(device)
        with torch.no_grad():
            logits = model(x)
        # one sum is cheaper than an element-wise check; a non-finite sum is looked at closely
        if not torch.isfinite(logits.sum()) and not torch.isfinite(logits).all():
            raise input_error("model logits", "NaN or infinite values under noise", "finite logits", raw=True)
        yield first_argmax(logits).cpu()
        done += b


def first_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Arg-max over the class axis 1 (ties to the first maximal class).

    ``Tensor.max(1).indices`` rather than ``Tensor.argmax(1)``: on CPU the latter reduced a
    ``(B, K, H, W)`` tensor over its strided class axis several times slower, which made it the
    largest cost of certification after the model itself.
    """
    return logits.max(1).indices


def _class_counts(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Per-class counts over the sample axis: ``(b, ...)`` labels -> ``(K, ...)`` int64."""
    flat = labels.reshape(labels.shape[0], -1)
    counts = torch.zeros((n_classes, flat.shape[1]), dtype=torch.int64)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    return counts.reshape((n_classes, *labels.shape[1:]))


def _top_class(counts: torch.Tensor) -> np.ndarray:
    """Arg-max over the class axis (ties to the lowest class, as ``argmax``)."""
    return counts.argmax(0).numpy().astype(np.int64)


def smoothed_predict(
    model: Model,
    image: torch.Tensor,
    *,
    n_classes: int,
    sigma: float,
    n: int,
    alpha: float,
    generator: torch.Generator,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> int:
    """Cohen et al.'s PREDICT: the top class of ``n`` noisy passes, or :data:`ABSTAIN` when the
    two-sided binomial test of the top two counts is not significant at ``alpha``.

    The returned class differs from the smoothed classifier's with probability at most ``alpha``.
    """
    check_certify_params(sigma=sigma, n0=1, n=n, alpha=alpha, batch_size=batch_size)
    counts = sum(
        (
            _class_counts(b, n_classes)
            for b in noisy_labels(
                model, image, n, sigma=sigma, generator=generator, batch_size=batch_size, device=device
            )
        ),
        torch.zeros(n_classes, dtype=torch.int64),
    )
    top2 = torch.topk(counts, 2).indices.tolist() if n_classes > 1 else [0, 0]
    n_a, n_b = int(counts[top2[0]]), int(counts[top2[1]])
    p = float(binomial_pvalue_two_sided(n_a, n_a + n_b))
    return int(top2[0]) if p <= alpha else ABSTAIN


@dataclass(frozen=True)
class ClassCertificate:
    """Cohen's CERTIFY for one image.

    Attributes
    ----------
    prediction : the certified class, or :data:`ABSTAIN`
    selected : the top class of the n0 selection passes
    count : how often ``selected`` won among the n estimation passes
    p_lower : the one-sided Clopper–Pearson lower bound of its probability at level alpha
    radius : ``sigma * Phi^-1(p_lower)``, 0 when abstaining
    noisy_predictions : the plain model's labels on the n0 selection passes ``(n0,)``
    """

    prediction: int
    selected: int
    count: int
    p_lower: float
    radius: float
    noisy_predictions: np.ndarray


def certify_classification(
    model: Model,
    image: torch.Tensor,
    *,
    n_classes: int,
    sigma: float = 0.25,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    generator: torch.Generator,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> ClassCertificate:
    """Cohen et al. (2019) CERTIFY: select the top class with ``n0`` passes, estimate its
    probability with ``n`` fresh passes, certify radius ``sigma Phi^-1(pA)`` when ``pA > 1/2``.

    With probability at least ``1 - alpha`` over the noise, a returned class is the smoothed
    classifier's prediction everywhere within the radius (L2, in [0, 1] image units).
    """
    check_certify_params(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size)
    draw = functools.partial(
        noisy_labels, model, image, sigma=sigma, generator=generator, batch_size=batch_size, device=device
    )
    first = torch.cat(list(draw(n0)))
    selected = int(_top_class(_class_counts(first, n_classes)))
    count = sum(int((b == selected).sum()) for b in draw(n))
    p_lower = float(clopper_pearson_lower(count, n, alpha))
    radius = float(classification_radius(sigma, np.array(p_lower)))
    return ClassCertificate(
        prediction=selected if p_lower > 0.5 else ABSTAIN,
        selected=selected,
        count=count,
        p_lower=p_lower,
        radius=radius,
        noisy_predictions=first.numpy().astype(np.int64),
    )


@dataclass(frozen=True)
class PixelCertificate:
    """SegCertify for one image.

    Attributes
    ----------
    certified : int64 ``(H, W)``, the certified class or :data:`ABSTAIN`
    selected : int64 ``(H, W)``, the top class of the n0 selection passes
    counts : int64 ``(H, W)``, how often ``selected`` won among the estimation passes used
    samples_used : n0 plus the estimation passes drawn (``n0 + n`` unless sequential stopped early)
    noisy_labels : int64 ``(n0, H, W)``, the plain model's labels on the n0 selection passes
    """

    certified: np.ndarray
    selected: np.ndarray
    counts: np.ndarray
    samples_used: int
    noisy_labels: np.ndarray


def certify_segmentation(
    model: Model,
    image: torch.Tensor,
    *,
    n_classes: int,
    sigma: float = 0.25,
    n0: int = 10,
    n: int = 100,
    alpha: float = 0.001,
    tau: float = 0.75,
    correction: str = "holm",
    sequential: bool = False,
    round_size: int = 10,
    generator: torch.Generator,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> PixelCertificate:
    """SegCertify (Fischer et al. 2021): per pixel, the top class from ``n0`` noisy passes, its
    count among ``n`` further passes, the one-sided binomial test of ``p <= tau``, the correction
    across the image's pixels; pixels not rejected abstain. Every certified pixel keeps its class
    within the L2 radius ``sigma Phi^-1(tau)`` (jointly, with probability ``1 - alpha`` for Holm
    and Bonferroni; BH bounds the expected fraction of wrongly certified pixels instead).

    ``sequential=True`` draws the n passes in rounds of ``round_size`` and stops once every pixel
    is decided: certified by the correction applied to the running alpha-spending p-values
    (:func:`~medsure.certify.stats.sequential_pvalues`), or unable to reach any threshold the
    correction could give it even if all remaining samples agreed
    (:func:`~medsure.certify.stats.never_rejected`). Because the running p-values only
    fall and the corrections are monotone, stopping there returns exactly what running all
    ``n`` passes with the same p-values would return, so the guarantee is that of the full run.
    The price is the spending factor (the number of looks) on every p-value.
    """
    check_certify_params(sigma=sigma, n0=n0, n=n, alpha=alpha, tau=tau, batch_size=batch_size)
    check_choice("correction", correction, ("holm", "bonferroni", "bh"))
    round_size = check_int("round_size", round_size, low=1)
    draw = functools.partial(
        noisy_labels, model, image, sigma=sigma, generator=generator, batch_size=batch_size, device=device
    )
    first = torch.cat(list(draw(n0)))
    selected = _top_class(_class_counts(first, n_classes))
    shape = selected.shape
    sel = torch.from_numpy(selected)
    if not sequential:
        count = sum(
            ((b == sel).sum(0) for b in draw(n)),
            torch.zeros(shape, dtype=torch.int64),
        ).numpy()
        pvalues = binomial_pvalue_greater(count.reshape(-1), n, tau)
        rejected = reject(pvalues, alpha, correction).reshape(shape)
        return PixelCertificate(
            np.where(rejected, selected, ABSTAIN), selected, count, n0 + n, first.numpy().astype(np.int64)
        )
    looks = np.unique(np.minimum(np.arange(1, math.ceil(n / round_size) + 1) * round_size, n))
    weights = spending_weights(looks)
    m = int(np.prod(shape))
    hits = np.zeros(m, dtype=np.int64)
    running: np.ndarray = np.ones(m)
    seen = 0
    certified_mask = np.zeros(m, dtype=bool)
    for j, look in enumerate(looks):
        for b in draw(int(look - seen)):
            hits += (b == sel).reshape(b.shape[0], -1).sum(0).numpy()
        seen = int(look)
        running = sequential_pvalues(running, hits, seen, float(weights[j]), tau)
        certified_mask = reject(running, alpha, correction)
        if j == len(looks) - 1:
            break
        # best reachable running p-value: every remaining sample agrees (p falls as agreeing samples come)
        best = running.copy()
        for later, w in zip(looks[j + 1 :], weights[j + 1 :], strict=True):
            extra = int(later) - seen
            best = np.minimum(best, binomial_pvalue_greater(hits + extra, int(later), tau) / w)
        if np.all(certified_mask | never_rejected(best, alpha, correction)):
            break
    return PixelCertificate(
        np.where(certified_mask.reshape(shape), selected, ABSTAIN),
        selected,
        hits.reshape(shape),
        n0 + seen,
        first.numpy().astype(np.int64),
    )
