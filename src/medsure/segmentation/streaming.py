"""Segmentation metrics and conformal masks over a shard folder, one shard in memory at a time.

A segmentation prediction set of thousands of images is tens of GB; these drivers read it a
shard at a time (:mod:`medsure.shards`) and keep only what a summary needs:

- :func:`segmentation_metrics_streaming`: per image Dice and HD95 per label and image-level
  uncertainty (``(N,)`` values, exactly those of the in-memory functions), and the pixel
  reliability bins (equal width, merged shard by shard: float tolerance). The equal-mass pixel
  ECE needs every pixel's confidence at once and is left out.
- :func:`fit_mask_streaming` / :func:`fnr_streaming`: :class:`ConformalMask` over shards. The
  risk-control threshold needs, per label, the probabilities of the ground-truth pixels only
  (a 1-D array, not the maps), in the same order as in memory: the same λ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medsure.core import mean_dice, nanmean, undefined_as_none
from medsure.segmentation.conformal_mask import ConformalMask, _probs_and_masks, crc_threshold_from_pixels, fnr
from medsure.segmentation.evaluate import ground_truth_masks, image_scores, require_segmentation
from medsure.segmentation.metrics import dice_per_label, hd95_per_label, image_dice, uncertainty_dice_association
from medsure.segmentation.uncertainty import DEFAULT_REDUCTION, REDUCTIONS, UNCERTAINTY_KINDS, uncertainty_maps
from medsure.shards import ShardSource, shards_of
from medsure.validation import check_alpha, check_choice, check_int, input_error, validate_params

__all__ = ["segmentation_metrics_streaming", "fit_mask_streaming", "fnr_streaming", "crc_threshold_from_pixels"]


def _parts(source: ShardSource) -> Any:
    return shards_of(source, task="segmentation")


def segmentation_metrics_streaming(
    source: ShardSource, *, uncertainty: str = "entropy", n_bins: int = 15
) -> dict[str, Any]:
    """Dice, HD95, pixel ECE/MCE and the uncertainty–Dice association of a streamed, labelled
    segmentation set.

    Returns
    -------
    dict with ``n_images``, ``labels`` (foreground names), ``dice`` and ``hd95`` (mean per label
    where defined), ``dice_mean``, ``hd95_n_undefined``, ``ece``, ``mce`` (top-label, all pixels,
    equal-width bins), ``n_pixels``, ``dice_pred_corr`` (Spearman of the image uncertainty with
    Dice), ``dice_spearman_by_reduction``; and the arrays ``image_dice (N,)``, ``dice (N, K-1)``
    as ``dice_per_image``, ``hd95_per_image`` and ``image_scores`` (reduction -> ``(N,)``).
    """
    check_choice("uncertainty", uncertainty, UNCERTAINTY_KINDS)
    n_bins = check_int("n_bins", n_bins, low=1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    count = np.zeros(n_bins, np.int64)
    score_sum = np.zeros(n_bins)
    hit_sum = np.zeros(n_bins)
    dice_parts, hd_parts = [], []
    scores: dict[str, list[np.ndarray]] = {r: [] for r in REDUCTIONS}
    names: list[str] | None = None
    for part in _parts(source):
        require_segmentation(part, "predictions")
        masks = ground_truth_masks(part, "predictions")
        k = part.n_classes
        if names is None:
            names = [str(c) for c in part.class_names[1:]]
        maps = uncertainty_maps(part)
        predicted = maps["predicted"]
        dice_parts.append(dice_per_label(predicted, masks, k))
        hd_parts.append(hd95_per_label(predicted, masks, k))
        for r in REDUCTIONS:
            scores[r].append(image_scores(part, uncertainty=uncertainty, reduce=r, maps=maps))
        # the bins of medsure.core.binned_calibration (uniform): e_b < s <= e_{b+1}
        conf = maps["probabilities"].max(axis=1).astype(np.float32).astype(np.float64).ravel()
        hit = (predicted == masks).ravel().astype(np.float64)
        index = np.searchsorted(edges[1:-1], conf, side="left")
        count += np.bincount(index, minlength=n_bins)
        score_sum += np.bincount(index, weights=conf, minlength=n_bins)
        hit_sum += np.bincount(index, weights=hit, minlength=n_bins)
        del maps, conf, hit
    if names is None:
        raise input_error("predictions", "no shards", "at least one labelled image", raw=True)
    dice, hd95 = np.concatenate(dice_parts), np.concatenate(hd_parts)
    per_image = image_dice(dice)
    image = {r: np.concatenate(v) for r, v in scores.items()}
    safe = np.maximum(count, 1)
    gaps = np.abs(hit_sum / safe - score_sum / safe)
    filled = count > 0
    association = uncertainty_dice_association(image[DEFAULT_REDUCTION], per_image)
    return {
        "n_images": int(dice.shape[0]),
        "labels": names,
        "uncertainty": uncertainty,
        "dice": {n: undefined_as_none(nanmean(dice[:, j])) for j, n in enumerate(names)},
        "dice_mean": undefined_as_none(mean_dice(dice)),
        "hd95": {n: undefined_as_none(nanmean(hd95[:, j])) for j, n in enumerate(names)},
        "hd95_n_undefined": {n: int(np.sum(~np.isfinite(hd95[:, j]))) for j, n in enumerate(names)},
        "ece": float(np.sum(count * gaps) / count.sum()) if filled.any() else float("nan"),
        "mce": float(gaps[filled].max()) if filled.any() else float("nan"),
        "n_pixels": int(count.sum()),
        "dice_pred_corr": association["spearman"],
        "dice_spearman_by_reduction": {
            r: undefined_as_none(uncertainty_dice_association(s, per_image)["spearman"]) for r, s in image.items()
        },
        "image_dice": per_image,
        "dice_per_image": dice,
        "hd95_per_image": hd95,
        "image_scores": image,
    }


def fit_mask_streaming(mask: ConformalMask, cal: ShardSource) -> ConformalMask:
    """:meth:`ConformalMask.fit` over the shards of ``cal``: the same ``lambda_`` and ``n_cal_``.

    Memory: one shard plus, per label, the probabilities of the ground-truth pixels.
    """
    validate_params(mask)
    check_alpha(mask.alpha)
    values: dict[int, list[np.ndarray]] = {}
    counts: dict[int, list[np.ndarray]] = {}
    n_used: dict[int, int] = {}
    top: dict[int, float] = {}
    k = None
    names: np.ndarray | None = None
    for part in _parts(cal):
        probs, masks = _probs_and_masks(part, "cal predictions")
        if k is None:
            k, names = probs.shape[1], np.asarray(part.class_names[1:]).astype(str)
            values = {j: [] for j in range(1, k)}
            counts = {j: [] for j in range(1, k)}
            n_used = dict.fromkeys(range(1, k), 0)
            top = dict.fromkeys(range(1, k), -np.inf)
        elif probs.shape[1] != k:
            raise input_error("cal shard", f"K={probs.shape[1]} labels", f"K={k} like the first shard", raw=True)
        for j in range(1, k):
            p = probs[:, j].astype(np.float64)
            gt = masks == j
            if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
                raise input_error("probabilities", "values outside [0, 1]", "finite values in [0, 1]", raw=True)
            per_image = gt.reshape(gt.shape[0], -1).sum(axis=1)
            if mask.empty_gt == "exclude":
                keep = per_image > 0
                p, gt, per_image = p[keep], gt[keep], per_image[keep]
            n_used[j] += int(gt.shape[0])
            if p.size:
                top[j] = max(top[j], float(p.max()))
            image_index = np.nonzero(gt)[0]
            values[j].append(p[gt])
            counts[j].append(per_image[image_index])
    if k is None or names is None:
        raise input_error("cal", "no shards", "at least one calibration image", raw=True)
    mask.lambda_ = np.array(
        [
            crc_threshold_from_pixels(
                np.concatenate(values[j]), np.concatenate(counts[j]), n_used[j], float(mask.alpha), top[j]
            )
            for j in range(1, k)
        ]
    )
    mask.n_cal_ = np.array([n_used[j] for j in range(1, k)], dtype=np.int64)
    mask.class_names_ = names
    return mask


def fnr_streaming(mask: ConformalMask, test: ShardSource) -> np.ndarray:
    """:meth:`ConformalMask.fnr` over the shards of ``test``: per-image FNR ``(N, K - 1)``."""
    mask._check_fitted()
    parts = []
    for part in _parts(test):
        probs, masks = _probs_and_masks(part, "test predictions")
        mask._check_labels(probs.shape[1])
        parts.append(
            np.stack([fnr(probs[:, j], masks == j, mask.lambda_[j - 1]) for j in range(1, probs.shape[1])], axis=1)
        )
    if not parts:
        raise input_error("test", "no shards", "at least one test image", raw=True)
    return np.concatenate(parts)
