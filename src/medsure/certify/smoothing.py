"""Randomized smoothing over a model *callable*: Cohen et al. (2019) for classifiers, SegCertify
(Fischer et al. 2021) for segmenters, and a sequential variant that stops an image early.

The model is any callable taking a float tensor ``(B, C, H, W)`` (images in ``[0, 1]`` plus
Gaussian noise of standard deviation ``sigma``, not clipped, as in the published algorithms) and
returning logits ``(B, K)`` or ``(B, K, H, W)``; a denoiser is composed into that callable by the
caller. Noise samples go through the model in batches; counts and tests are vectorised over
pixels (no Python loop over pixels or samples).

Randomness: every image gets its own ``torch.Generator`` (:func:`image_seed` of the run seed and
the image's position), and its noise is drawn one sample at a time (:func:`draw_noise`), so an
image's certificate does not depend on the batch size, on ``--limit`` or on the other images.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from medsure.certify.stats import (
    binomial_pvalue_greater,
    binomial_pvalue_two_sided,
    chance_to_reach,
    clopper_pearson_lower,
    futile,
    late_looks,
    reachable_threshold,
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
    "SELECTIONS",
    "certify_segmentation",
    "certify_labels",
    "draw_noise",
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
    done = 0
    while done < num:
        b = min(batch_size, num - done)
        # out of place: the model ran markedly slower (about 1.4x on this CPU) on the noise buffer
        # updated in place (mul_/add_) than on a freshly allocated sum of the same values
        x = (image.unsqueeze(0) + sigma * draw_noise(b, tuple(image.shape), generator)).to(device)
        with torch.no_grad():
            logits = model(x)
        # one sum is cheaper than an element-wise check; a non-finite sum is looked at closely
        if not torch.isfinite(logits.sum()) and not torch.isfinite(logits).all():
            raise input_error("model logits", "NaN or infinite values under noise", "finite logits", raw=True)
        yield first_argmax(logits).cpu()
        done += b


def draw_noise(num: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``num`` standard-normal samples of ``shape`` from ``generator``: ``(num, *shape)`` float32.

    One ``torch.randn(shape)`` call per sample, so the stream does not depend on how samples
    are grouped into batches. (One batched call gives the same stream when a sample's size is a
    multiple of 16, as torch fills normals in blocks of 16, but measured on this project's CPU
    it was no faster: the two-pass fill of a large tensor loses the cache locality of
    per-sample fills; see ``benchmarks/certification.md``.)

    Parameters
    ----------
    num : samples
    shape : the shape of one sample, e.g. ``(C, H, W)``
    generator : CPU generator, advanced by ``num`` draws

    Returns
    -------
    float32 tensor ``(num, *shape)``.
    """
    noise = torch.empty((num, *shape))
    for j in range(num):
        torch.randn(shape, generator=generator, out=noise[j])
    return noise


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


SELECTIONS = ("split", "union")


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
    looks: Sequence[int] | str | None = None,
    futility: float = 0.0,
    tolerance: float = 0.0,
    selection: str = "split",
) -> PixelCertificate:
    """SegCertify (Fischer et al. 2021): per pixel, the top class from ``n0`` noisy passes, its
    count among ``n`` further passes, the one-sided binomial test of ``p <= tau``, the correction
    across the image's pixels; pixels not rejected abstain. Every certified pixel keeps its class
    within the L2 radius ``sigma Phi^-1(tau)`` (jointly, with probability ``1 - alpha`` for Holm
    and Bonferroni; BH bounds the expected fraction of wrongly certified pixels instead).

    Parameters
    ----------
    model : callable ``(B, C, H, W)`` -> logits ``(B, K, H, W)``
    image : float tensor ``(C, H, W)`` in ``[0, 1]``, on CPU
    n_classes : K
    sigma, n0, n, alpha, tau, correction : the smoothing settings
    sequential : draw the ``n`` passes in looks and stop once every pixel is decided (below)
    round_size : with ``sequential`` and no ``looks``: a look every ``round_size`` passes
    generator : the image's CPU generator (its noise stream)
    batch_size : noisy copies per forward pass; device : where the model runs
    looks : with ``sequential``: the estimation-pass counts at which to look (increasing, the
        last is ``n``); "late" for :func:`~medsure.certify.stats.late_looks` with 4 looks;
        None or "rounds" for a look every ``round_size`` passes
    futility : with ``sequential``: the futility budget beta (0 = off), see below
    tolerance : with ``sequential``: stop once, for every class, the open pixels' expected
        further certifications are at most ``tolerance`` times the pixels certified as that
        class (0 = stop only when every pixel is decided)
    selection : "split" (SegCertify: the n0 passes only select the class) or "union" (every
        pass counts, union bound over the classes, see :func:`certify_labels`)

    Returns
    -------
    PixelCertificate

    Notes
    -----
    ``sequential=True`` looks at the counts after each look and stops once every pixel is
    decided: certified by the correction applied to the running alpha-spending p-values
    (:func:`~medsure.certify.stats.sequential_pvalues`), unable to reach any threshold the
    correction could give it even if all remaining samples agreed
    (:func:`~medsure.certify.stats.never_rejected`), or, with ``futility > 0``, implausible to reach
    it by the end (:func:`~medsure.certify.stats.futile`); with ``tolerance > 0`` it also stops
    once the open pixels (none of the three) matter little: per class, the expected number of
    them that would still be certified by the end (each at its observed rate,
    :func:`~medsure.certify.stats.chance_to_reach`) is at most ``tolerance`` times the pixels
    certified as that class. The running p-values are valid p-values at any stopping time
    (union bound over the looks), so the certificates keep the guarantee whatever the reason
    for stopping; the first two reasons return exactly what the full run of the same p-values
    would; futility and tolerance may abstain a pixel the full run would certify (a Dice cost,
    not an error). Why the tolerance is a Dice tolerance: Dice ``2TP / (|pred| + |truth|)``
    changes by at most ``2u / (|pred| + |truth| + u)`` when ``u`` pixels join ``pred``; with
    ``|truth|`` about ``|pred|`` and about ``E = tolerance |pred|`` joining, a label's certified
    Dice (abstain counted wrong) moves by about ``tolerance / 2`` or less (measured in
    ``benchmarks/certification.md``; a plug-in estimate, not a bound). The price of looking is
    the spending factor (the number of looks) on every p-value: few looks, late (where a pixel
    can be certified at all), cost least.
    """
    check_certify_params(sigma=sigma, n0=n0, n=n, alpha=alpha, tau=tau, batch_size=batch_size)
    draw = functools.partial(
        noisy_labels, model, image, sigma=sigma, generator=generator, batch_size=batch_size, device=device
    )
    return certify_labels(
        draw,
        n_classes=n_classes,
        n0=n0,
        n=n,
        alpha=alpha,
        tau=tau,
        correction=correction,
        sequential=sequential,
        round_size=round_size,
        looks=looks,
        futility=futility,
        tolerance=tolerance,
        selection=selection,
    )


def _check_looks(
    looks: Sequence[int] | str | None, n: int, round_size: int, late: Callable[[], np.ndarray]
) -> np.ndarray:
    if isinstance(looks, str):
        check_choice("looks", looks, ("late", "rounds"))
        if looks == "late":
            return late()
        looks = None
    if looks is None:
        round_size = check_int("round_size", round_size, low=1)
        return np.unique(np.minimum(np.arange(1, math.ceil(n / round_size) + 1) * round_size, n)).astype(np.int64)
    arr = np.asarray(list(looks))
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise input_error("looks", f"{list(looks)}", "a non-empty list of integer sample counts", raw=True)
    if np.any(np.diff(arr) <= 0) or arr[0] < 1 or arr[-1] != n:
        raise input_error("looks", f"{arr.tolist()}", f"increasing sample counts >= 1 ending at n = {n}", raw=True)
    return arr.astype(np.int64)


def certify_labels(
    draw: Callable[[int], Iterable[torch.Tensor]],
    *,
    n_classes: int,
    n0: int,
    n: int,
    alpha: float,
    tau: float,
    correction: str = "holm",
    sequential: bool = False,
    round_size: int = 10,
    looks: Sequence[int] | str | None = None,
    futility: float = 0.0,
    tolerance: float = 0.0,
    selection: str = "split",
) -> PixelCertificate:
    """The statistics of :func:`certify_segmentation` on a stream of label maps.

    ``draw(k)`` yields the arg-max label maps of the next ``k`` noisy passes, int64 tensors
    ``(b, H, W)`` in batches (:func:`noisy_labels` of one image's generator; a benchmark may
    replay stored maps). The first ``n0`` passes are drawn first, then the estimation passes,
    only as many as the sequential mode needs.

    Selection. ``"split"`` (SegCertify): the class is the top class of the n0 passes, its count
    among the ``n`` further passes is tested, one hypothesis ``p_i(selected_i) <= tau`` per pixel,
    the correction over the ``m`` pixels. ``"union"``: every pass counts; each pixel and class
    has its hypothesis ``H_ic: p_i(c) <= tau`` tested on the class's count among all ``n0 + n``
    passes, and the correction runs over the ``m K`` hypotheses of the image. Why this is valid:
    Holm and Bonferroni control the family-wise error over any family under any dependence, so
    with probability ``>= 1 - alpha`` no true ``H_ic`` is rejected; a pixel certified as ``c``
    with ``p_i(c) <= tau`` would be exactly such a rejection. No data are used twice for a
    selection, because every class is tested (the union bound over classes); as ``tau > 1/2``
    at most one class per pixel can truly exceed tau, and only a class holding most of the
    passes can reach a p-value <= alpha, so the ``m (K - 1)`` other hypotheses cost only their
    place in the family (Holm's first threshold ``alpha / (m K)`` instead of ``alpha / m``). In
    the rare event that two classes of a pixel are rejected, the pixel abstains. The running
    p-values of the sequential mode are per pixel and class, valid at any stopping time.

    Parameters
    ----------
    draw : ``k`` -> the label maps of the next ``k`` passes, int64 ``(b, H, W)`` batches
    n_classes : K
    n0, n, alpha, tau, correction : the smoothing settings (as :func:`certify_segmentation`)
    sequential, round_size, looks, futility, tolerance : the sequential mode (as :func:`certify_segmentation`)
    selection : "split" or "union" (above)

    Returns
    -------
    PixelCertificate
        With ``"union"``, ``selected`` is the top class over all passes drawn and ``counts`` its
        count among them (``n0`` included).
    """
    check_certify_params(sigma=1.0, n0=n0, n=n, alpha=alpha, tau=tau)
    check_choice("correction", correction, ("holm", "bonferroni", "bh"))
    check_choice("selection", selection, SELECTIONS)
    if futility != 0.0:
        check_float("futility", futility, low=0.0, high=1.0, closed="neither", hint="a small budget such as 0.01")
    check_float("tolerance", tolerance, low=0.0, high=1.0, hint="a small fraction such as 0.02, or 0")
    if sequential:  # bad looks are refused before any pass is drawn ("late" needs the image size)
        _check_looks(looks, n, round_size, lambda: np.array([n], dtype=np.int64))
    union = selection == "union"
    offset = n0 if union else 0
    first = torch.cat(list(draw(n0)))
    shape = tuple(first.shape[1:])
    m = math.prod(shape)
    family = m * n_classes if union else m
    schedule = (
        _check_looks(looks, n, round_size, lambda: late_looks(n, family, alpha, tau, n_looks=4, offset=offset))
        if sequential
        else np.array([n], dtype=np.int64)
    )
    first_counts = _class_counts(first, n_classes).reshape(n_classes, m)
    selected = first_counts.argmax(0)
    # split: hits (m,) of the selected class; union: counts (K, m) of every class, selection passes included
    hits = first_counts.clone() if union else torch.zeros(m, dtype=torch.int64)
    weights = spending_weights(schedule) if sequential else np.ones(1)
    running = np.ones((n_classes, m) if union else m)
    rejected = np.zeros(running.shape, dtype=bool)
    seen = 0
    for j, look in enumerate(schedule):
        for b in draw(int(look - seen)):
            flat = b.reshape(b.shape[0], m)
            if union:
                hits += _class_counts(flat, n_classes)
            else:
                hits += (flat == selected).sum(0)
        seen = int(look)
        counts = hits.numpy()
        running = sequential_pvalues(running, counts, offset + seen, float(weights[j]), tau)
        rejected = reject(running.reshape(-1), alpha, correction).reshape(running.shape)
        if j == len(schedule) - 1 or _all_decided(
            running, counts, rejected, selected.numpy(), seen, schedule[j + 1 :], weights[j + 1 :], alpha, tau,
            correction, futility, tolerance, offset,
        ):  # fmt: skip
            break
    counts = hits.numpy()
    if union:
        winner = counts.argmax(0)
        certified = np.where(rejected.sum(0) == 1, rejected.argmax(0), ABSTAIN)
        return PixelCertificate(
            certified.reshape(shape),
            winner.reshape(shape),
            np.take_along_axis(counts, winner[None], 0)[0].reshape(shape),
            n0 + seen,
            first.numpy().astype(np.int64),
        )
    sel = selected.numpy().astype(np.int64)
    return PixelCertificate(
        np.where(rejected, sel, ABSTAIN).reshape(shape),
        sel.reshape(shape),
        counts.reshape(shape),
        n0 + seen,
        first.numpy().astype(np.int64),
    )


def _all_decided(
    running: np.ndarray,
    counts: np.ndarray,
    rejected: np.ndarray,
    selected: np.ndarray,
    seen: int,
    later: np.ndarray,
    later_weights: np.ndarray,
    alpha: float,
    tau: float,
    correction: str,
    futility: float,
    tolerance: float,
    offset: int,
) -> bool:
    """Whether every pixel is certified, can never be, or (futility) will not plausibly be; with
    ``tolerance``, whether the pixels still open are at most that share of each class's certified ones."""
    # best reachable running p-value: every remaining sample agrees (p falls as agreeing samples come)
    best = running.copy()
    for look, w in zip(later, later_weights, strict=True):
        extra = int(look) - seen
        best = np.minimum(best, binomial_pvalue_greater(counts + extra, offset + int(look), tau) / w)
    threshold = reachable_threshold(best.reshape(-1), alpha, correction)
    hopeless = best > threshold
    if futility > 0:
        hopeless |= futile(
            counts, seen, int(later[-1]), float(later_weights[-1]), threshold, tau, futility, offset=offset
        )
    if running.ndim == 2:  # union: a pixel is decided when one class is certified or none can be
        certified, open_ = rejected.any(0), ~(rejected.any(0) | hopeless.all(0))
        selected = counts.argmax(0)
    else:
        certified, open_ = rejected, ~(rejected | hopeless)
    if tolerance == 0 or not open_.any():
        return not bool(open_.any())
    # the expected number of open pixels that would still be certified by the end, at their
    # observed rates (a plug-in estimate), per class against the pixels certified as that class
    k = running.shape[0] if running.ndim == 2 else int(selected.max()) + 1
    own = np.take_along_axis(counts, selected[None], 0)[0] if running.ndim == 2 else counts
    total = offset + seen
    chance = chance_to_reach(
        own[open_], seen, int(later[-1]), float(later_weights[-1]), threshold, tau, own[open_] / total, offset=offset
    )
    expected = np.bincount(selected[open_], weights=chance, minlength=k)
    certified_per_class = np.bincount(selected[certified], minlength=k)
    return bool(np.all(expected <= tolerance * certified_per_class))
