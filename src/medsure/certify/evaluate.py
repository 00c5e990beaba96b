"""``evaluate_certification``: certify every image of a set and measure the certificates.

One function computes all that the JSON, the NPZ and the report show (:class:`CertificationResults`);
the CLI loads a run and a split, wraps the model (and a denoiser) into one callable and hands it here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medsure.certify.metrics import abstain_rate, certified_accuracy_curve, certified_dice, non_abstained_dice
from medsure.certify.smoothing import (
    ABSTAIN,
    Model,
    certify_classification,
    certify_segmentation,
    check_certify_params,
    image_seed,
    segmentation_radius,
)
from medsure.certify.stats import CORRECTIONS
from medsure.core.dice import dice_per_label
from medsure.core.stats import percentile_bootstrap, undefined_as_none
from medsure.utils.progress import progress
from medsure.validation import check_choice, check_int, input_error

__all__ = ["CertificationResults", "evaluate_certification", "images_to_tensor", "summarise_certification"]

TASKS = ("classification", "segmentation")


@dataclass
class CertificationResults:
    """Certificates of one image set and their metrics.

    Per-image arrays (first axis N) stay out of the JSON summary except through ``per_image``;
    ``certified``/``counts``/``selected`` are what ``--masks cert.npz`` stores.

    Attributes
    ----------
    task : "segmentation" or "classification"
    sigma, n0, n, alpha, tau, correction, sequential, seed : the settings (tau and correction
        apply to segmentation; None for classification)
    class_names : K names, background first for segmentation
    ids : str (N,)
    certified : int64 (N, H, W) or (N,), -1 for abstain
    selected : int64, same shape, the class of the n0 selection passes
    counts : int64, same shape, the count of ``selected`` among the estimation passes
    samples_used : int64 (N,), n0 + estimation passes drawn
    radius : segmentation: float, ``sigma Phi^-1(tau)``; classification: float64 (N,), 0 on abstain
    p_lower : classification: float64 (N,) Clopper–Pearson bounds; None for segmentation
    targets : int64 masks (N, H, W) or labels (N,), or None when unlabelled
    per_label : segmentation, float64 (N, K-1) arrays keyed by metric: ``certified_dice``,
        ``non_abstained_dice``, ``smoothed_dice`` (the n0 selection map), ``plain_dice``
        (clean image) and ``plain_noisy_dice`` (mean over the n0 noisy passes)
    per_image_rates : float64 (N,) arrays: ``abstain_rate``; classification also ``correct``,
        ``plain_correct``, ``plain_noisy_correct``
    summary : metric -> {"mean": float, "ci": [lo, hi] or None} (95 % percentile bootstrap over
        images; for per-label metrics also "per_label")
    radius_grid, certified_accuracy : classification: the certified-accuracy curve
    seconds_per_image : wall time of certification per image (model passes included)
    selection : segmentation: "split" (n0 passes select, n estimate) or "union" (all passes count)
    sequential_settings : with ``sequential``: ``looks`` (as given), ``futility``, ``tolerance``
    overlay_images : uint8 (M, H, W[, 3]) the first images, for the report's overlays
    """

    task: str
    sigma: float
    n0: int
    n: int
    alpha: float
    tau: float | None
    correction: str | None
    sequential: bool
    seed: int
    class_names: list[str]
    ids: np.ndarray
    certified: np.ndarray
    selected: np.ndarray
    counts: np.ndarray
    samples_used: np.ndarray
    radius: float | np.ndarray
    p_lower: np.ndarray | None
    targets: np.ndarray | None
    per_label: dict[str, np.ndarray] = field(default_factory=dict)
    per_image_rates: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    radius_grid: np.ndarray | None = None
    certified_accuracy: np.ndarray | None = None
    seconds_per_image: float = float("nan")
    overlay_images: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    selection: str = "split"
    sequential_settings: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``cert.json`` content: settings, radius, summaries with intervals, per-image list."""
        out: dict[str, Any] = {
            "task": self.task,
            "sigma": self.sigma,
            "n0": self.n0,
            "n": self.n,
            "alpha": self.alpha,
            "tau": self.tau,
            "correction": self.correction,
            "sequential": self.sequential,
            "seed": self.seed,
            "n_images": len(self.ids),
            "class_names": list(self.class_names),
        }
        if self.task == "segmentation":
            out["radius"] = float(self.radius)
            out["certified_dice"] = self.summary.get("certified_dice")
            out["non_abstained_dice"] = self.summary.get("non_abstained_dice")
            out["smoothed_dice"] = self.summary.get("smoothed_dice")
            out["plain_dice"] = self.summary.get("plain_dice")
            out["plain_noisy_dice"] = self.summary.get("plain_noisy_dice")
            out["selection"] = self.selection
            if self.sequential_settings is not None:
                out["sequential_settings"] = dict(self.sequential_settings)
        else:
            radii = np.asarray(self.radius, dtype=np.float64)
            certified = self.certified >= 0
            out["radius"] = {
                "mean_certified": undefined_as_none(radii[certified].mean()) if certified.any() else None,
                "median_certified": undefined_as_none(np.median(radii[certified])) if certified.any() else None,
            }
            curve = None
            if self.radius_grid is not None and self.certified_accuracy is not None:
                curve = [
                    {"radius": float(r), "certified_accuracy": undefined_as_none(a)}
                    for r, a in zip(self.radius_grid, self.certified_accuracy, strict=True)
                ]
            out["certified_accuracy"] = {
                "at_radius_0": self.summary.get("certified_accuracy"),
                "curve": curve,
            }
            out["plain_accuracy"] = self.summary.get("plain_accuracy")
            out["plain_noisy_accuracy"] = self.summary.get("plain_noisy_accuracy")
        out["abstain_rate"] = self.summary.get("abstain_rate")
        used = self.samples_used.astype(np.int64)
        out["samples_used"] = {
            "total": int(used.sum()),
            "mean": undefined_as_none(used.mean()) if used.size else None,
            "max_per_image": self.n0 + self.n,
        }
        out["seconds_per_image"] = undefined_as_none(self.seconds_per_image)
        out["per_image"] = self.per_image()
        out.update(self.extra)
        return out

    def per_image(self) -> list[dict[str, Any]]:
        """One record per image: id, samples used, abstain rate and the per-image metrics."""
        names = self.class_names[1:]
        rows = []
        for i, image_id in enumerate(self.ids):
            row: dict[str, Any] = {"id": str(image_id), "samples_used": int(self.samples_used[i])}
            for key, values in self.per_image_rates.items():
                row[key] = undefined_as_none(values[i])
            if self.task == "segmentation":
                for key, values in self.per_label.items():
                    row[key] = {name: undefined_as_none(v) for name, v in zip(names, values[i], strict=True)}
            else:
                row["prediction"] = int(self.certified[i])
                row["selected"] = int(self.selected[i])
                row["count"] = int(self.counts[i])
                row["p_lower"] = float(self.p_lower[i]) if self.p_lower is not None else None
                row["radius"] = float(np.asarray(self.radius)[i])
                if self.targets is not None:
                    row["label"] = int(self.targets[i])
            rows.append(row)
        return rows

    def arrays(self) -> dict[str, np.ndarray]:
        """The ``cert.npz`` content (segmentation): certified, counts, selected, ids, n, samples_used."""
        return {
            "certified": self.certified.astype(np.int64),
            "counts": self.counts.astype(np.int64),
            "selected": self.selected.astype(np.int64),
            "ids": np.asarray(self.ids).astype(str),
            "n": np.asarray(self.n, dtype=np.int64),
            "samples_used": self.samples_used.astype(np.int64),
        }


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """Dataset images ``(N, H, W, C)`` (uint8, or float in [0, 1]) -> float tensor ``(N, C, H, W)`` in [0, 1]."""
    arr = np.asarray(images)
    if arr.ndim != 4:
        raise input_error("images", f"shape {arr.shape}", "(N, H, W, C)", raw=True)
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, -1, 1)))
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def evaluate_certification(
    model: Model,
    images: np.ndarray,
    targets: np.ndarray | None,
    *,
    task: str,
    class_names: Sequence[str],
    ids: Sequence[str] | None = None,
    sigma: float = 0.25,
    n0: int | None = None,
    n: int | None = None,
    alpha: float = 0.001,
    tau: float = 0.75,
    correction: str = "holm",
    sequential: bool = False,
    round_size: int = 10,
    looks: Sequence[int] | str | None = None,
    futility: float = 0.0,
    tolerance: float = 0.0,
    selection: str = "split",
    seed: int = 0,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    radius_grid: np.ndarray | None = None,
    n_boot: int = 1000,
    n_overlays: int = 4,
    index_offset: int = 0,
) -> CertificationResults:
    """Certify every image with randomized smoothing and measure the certificates.

    Parameters
    ----------
    model : callable ``(B, C, H, W)`` float in [0, 1] (+ noise) -> logits ``(B, K[, H, W])``, in
        eval mode; compose a denoiser into it (see :mod:`medsure.denoise`)
    images : uint8 or float ndarray (N, H, W, C), the dataset's images
    targets : int masks (N, H, W) or labels (N,), or None (certificates only, no metrics)
    task : "segmentation" (SegCertify) or "classification" (Cohen et al. CERTIFY)
    class_names : K names (background first for segmentation)
    ids : N image ids (default "0", "1", ...)
    sigma, n0, n, alpha, tau, correction : smoothing settings; n0/n default to 10/100
        (segmentation, as SegCertify) and 100/1000 (classification)
    sequential : segmentation only: looks at the counts and early stopping
        (see :func:`~medsure.certify.smoothing.certify_segmentation`)
    round_size, looks, futility, tolerance : the sequential mode's look schedule (``looks``:
        sample counts, "late" or "rounds"/None for every ``round_size``) and stopping rules
    selection : segmentation: "split" (SegCertify) or "union" (the n0 passes also count, union
        bound over classes; see :func:`~medsure.certify.smoothing.certify_labels`)
    seed : run seed; image i uses ``image_seed(seed, index_offset + i)``
    batch_size : noisy copies per forward pass
    device : where the model runs
    radius_grid : classification: radii of the certified-accuracy curve (default 0..4 sigma)
    n_boot : bootstrap resamples of the summary intervals
    n_overlays : images kept (uint8) for the report's overlays
    index_offset : position of ``images[0]`` in the full split (keeps per-image seeds stable)

    Returns
    -------
    CertificationResults
    """
    check_choice("task", task, TASKS)
    n0 = (10 if task == "segmentation" else 100) if n0 is None else n0
    n = (100 if task == "segmentation" else 1000) if n is None else n
    check_certify_params(sigma=sigma, n0=n0, n=n, alpha=alpha, tau=tau, batch_size=batch_size)
    check_choice("correction", correction, CORRECTIONS)
    check_int("seed", seed)
    if sequential and task != "segmentation":
        raise input_error("sequential", "with a classification model", "a segmentation model (it stops per pixel)")
    if selection != "split" and task != "segmentation":
        raise input_error("selection", f"'{selection}' with a classification model", "a segmentation model")
    x = images_to_tensor(images)
    n_images = x.shape[0]
    ids_arr = np.asarray(ids if ids is not None else [str(i) for i in range(n_images)]).astype(str)
    if ids_arr.shape != (n_images,):
        raise input_error("ids", f"{ids_arr.size} ids", f"one per image ({n_images})", raw=True)
    if targets is not None:
        targets = np.asarray(targets).astype(np.int64)
        expected = (n_images, *x.shape[2:]) if task == "segmentation" else (n_images,)
        if targets.shape != expected:
            raise input_error("targets", f"shape {targets.shape}", f"{expected}", raw=True)
    # a module runs in eval mode (dropout off, batch-norm running statistics: the smoothed classifier
    # must be a fixed function); its modes are restored afterwards
    modes = {m: m.training for m in model.modules()} if isinstance(model, torch.nn.Module) else {}
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        return _certify_all(
            model, x, targets, images, task, class_names, ids_arr, sigma, n0, n, alpha, tau, correction,
            sequential, round_size, seed, batch_size, device, radius_grid, n_boot, n_overlays, index_offset,
            {"looks": looks, "futility": futility, "tolerance": tolerance, "selection": selection},
        )  # fmt: skip
    finally:
        for module, mode in modes.items():
            module.training = mode


def _certify_all(
    model: Model,
    x: torch.Tensor,
    targets: np.ndarray | None,
    images: np.ndarray,
    task: str,
    class_names: Sequence[str],
    ids_arr: np.ndarray,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    tau: float,
    correction: str,
    sequential: bool,
    round_size: int,
    seed: int,
    batch_size: int,
    device: torch.device | str,
    radius_grid: np.ndarray | None,
    n_boot: int,
    n_overlays: int,
    index_offset: int,
    options: dict[str, Any],
) -> CertificationResults:
    """The loop over images and the metrics of :func:`evaluate_certification` (arguments checked there)."""
    n_images = x.shape[0]
    k = len(class_names)
    certified: list[np.ndarray] = []
    selected: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    noisy: list[np.ndarray] = []
    clean: list[np.ndarray] = []
    used: list[int] = []
    p_lower: list[float] = []
    radii: list[float] = []
    start = time.perf_counter()
    for i in progress(range(n_images), desc=f"certify (sigma={sigma:g})", total=n_images):
        gen = torch.Generator().manual_seed(image_seed(seed, index_offset + i))
        common = {"n_classes": k, "sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "generator": gen}
        if task == "segmentation":
            cert = certify_segmentation(
                model,
                x[i],
                tau=tau,
                correction=correction,
                sequential=sequential,
                round_size=round_size,
                batch_size=batch_size,
                device=device,
                **options,
                **common,  # type: ignore[arg-type]
            )
            noisy.append(cert.noisy_labels)
            certified.append(cert.certified)
            selected.append(cert.selected)
            counts.append(cert.counts)
            used.append(cert.samples_used)
        else:
            c = certify_classification(model, x[i], batch_size=batch_size, device=device, **common)  # type: ignore[arg-type]
            noisy.append(c.noisy_predictions)
            certified.append(np.asarray(c.prediction, dtype=np.int64))
            selected.append(np.asarray(c.selected, dtype=np.int64))
            counts.append(np.asarray(c.count, dtype=np.int64))
            used.append(n0 + n)
            p_lower.append(c.p_lower)
            radii.append(c.radius)
        with torch.no_grad():
            clean.append(model(x[i : i + 1].to(device)).argmax(1).cpu().numpy()[0])
    elapsed = time.perf_counter() - start
    results = CertificationResults(
        task=task,
        sigma=float(sigma),
        n0=int(n0),
        n=int(n),
        alpha=float(alpha),
        tau=float(tau) if task == "segmentation" else None,
        correction=correction if task == "segmentation" else None,
        sequential=bool(sequential),
        seed=int(seed),
        class_names=[str(c) for c in class_names],
        ids=ids_arr,
        certified=np.stack(certified) if certified else np.zeros((0,), np.int64),
        selected=np.stack(selected) if selected else np.zeros((0,), np.int64),
        counts=np.stack(counts) if counts else np.zeros((0,), np.int64),
        samples_used=np.asarray(used, dtype=np.int64),
        radius=segmentation_radius(sigma, tau) if task == "segmentation" else np.asarray(radii),
        p_lower=None if task == "segmentation" else np.asarray(p_lower),
        targets=targets,
        seconds_per_image=elapsed / max(n_images, 1),
        overlay_images=np.asarray(images)[: max(0, n_overlays)].copy() if n_overlays else None,
        selection=str(options["selection"]),
        sequential_settings=sequential_settings(
            sequential, options["looks"], round_size, options["futility"], options["tolerance"]
        ),
    )
    results.per_image_rates["abstain_rate"] = abstain_rate(results.certified)
    if targets is not None and n_images:
        if task == "segmentation":
            noisy_arr = np.stack(noisy)  # (N, n0, H, W)
            flat_noisy = noisy_arr.reshape(-1, *noisy_arr.shape[2:])
            repeated = np.repeat(targets, noisy_arr.shape[1], axis=0)
            results.per_label = {
                "certified_dice": certified_dice(results.certified, targets, k),
                "non_abstained_dice": non_abstained_dice(results.certified, targets, k),
                "smoothed_dice": dice_per_label(results.selected, targets, k),
                "plain_dice": dice_per_label(np.stack(clean), targets, k),
                "plain_noisy_dice": _mean_over_samples(
                    dice_per_label(flat_noisy, repeated, k).reshape(n_images, noisy_arr.shape[1], k - 1)
                ),
            }
        else:
            labels = targets
            correct = ((results.certified == labels) & (results.certified != ABSTAIN)).astype(np.float64)
            results.per_image_rates["correct"] = correct
            results.per_image_rates["plain_correct"] = (np.asarray(clean) == labels).astype(np.float64)
            results.per_image_rates["plain_noisy_correct"] = (np.stack(noisy) == labels[:, None]).mean(axis=1)
    return summarise_certification(results, n_boot=n_boot, radius_grid=radius_grid)


def summarise_certification(
    results: CertificationResults, *, n_boot: int = 1000, radius_grid: np.ndarray | None = None
) -> CertificationResults:
    """Fill ``results.summary`` (and, for classification, the certified-accuracy curve) from its
    per-image arrays: the means over images with 95 % percentile-bootstrap intervals (seeded by
    ``results.seed``). Used by :func:`evaluate_certification` and by the merge of certification
    parts computed elsewhere (``medsure certify --engine ray``), so both summarise alike.

    Parameters
    ----------
    results : per-image arrays filled (``per_image_rates`` with ``abstain_rate``; with targets,
        ``per_label`` for segmentation or ``correct``/``plain_correct``/``plain_noisy_correct``)
    n_boot : bootstrap resamples (0: no intervals)
    radius_grid : classification: radii of the curve (default 0..4 sigma in 41 steps)

    Returns
    -------
    the same ``results``, updated in place
    """
    seed = results.seed
    summary: dict[str, Any] = {"abstain_rate": _mean_interval(results.per_image_rates["abstain_rate"], n_boot, seed)}
    if results.targets is not None and len(results.ids):
        if results.task == "segmentation":
            names = results.class_names[1:]
            for key, values in results.per_label.items():
                summary[key] = _label_summary(values, names, n_boot, seed)
        else:
            for key, rate in (
                ("certified_accuracy", "correct"),
                ("plain_accuracy", "plain_correct"),
                ("plain_noisy_accuracy", "plain_noisy_correct"),
            ):
                summary[key] = _mean_interval(results.per_image_rates[rate], n_boot, seed)
            sigma = results.sigma
            grid = np.linspace(0.0, 4.0 * sigma, 41) if radius_grid is None else np.asarray(radius_grid, np.float64)
            results.radius_grid = grid
            results.certified_accuracy = certified_accuracy_curve(
                results.certified, np.asarray(results.radius), results.targets, grid
            )
    results.summary = summary
    return results


def sequential_settings(
    sequential: bool, looks: Sequence[int] | str | None, round_size: int, futility: float, tolerance: float
) -> dict[str, Any] | None:
    """The ``sequential_settings`` recorded in ``cert.json`` (None without ``sequential``)."""
    if not sequential:
        return None
    return {
        "looks": looks if isinstance(looks, str | None) else [int(v) for v in looks],
        "round_size": int(round_size),
        "futility": float(futility),
        "tolerance": float(tolerance),
    }


def _mean_over_samples(values: np.ndarray) -> np.ndarray:
    """NaN-aware mean over axis 1 without a warning for all-NaN cells."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=1)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _weighted_label_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-label means of ``values`` (N, L) under case weights (B, N), NaN cells skipped: (B, L)."""
    finite = np.isfinite(values)
    total = weights @ np.where(finite, values, 0.0)
    count = weights @ finite.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1e-300), np.nan)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            finite.any(axis=1), np.where(finite, values, 0.0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1), np.nan
        )


def _label_summary(values: np.ndarray, names: Sequence[str], n_boot: int, seed: int) -> dict[str, Any]:
    """Mean over labels (each label's mean over images where defined) and per label, with 95 % intervals."""
    n_images = values.shape[0]
    point = _weighted_label_means(values, np.ones((1, n_images)))[0]

    def statistic(w: np.ndarray) -> dict[str, np.ndarray]:
        means = _weighted_label_means(values, w.astype(np.float64))
        out = {"mean": _nanmean_rows(means)}
        out.update({f"label{j}": means[:, j] for j in range(means.shape[1])})
        return out

    intervals = percentile_bootstrap(statistic, n_images, n_boot=n_boot, seed=seed) if n_boot > 0 else {}
    per_label = {
        name: {"mean": undefined_as_none(point[j]), "ci": _ci(intervals.get(f"label{j}"))}
        for j, name in enumerate(names)
    }
    mean = float(_nanmean_rows(point[None, :])[0])
    return {"mean": undefined_as_none(mean), "ci": _ci(intervals.get("mean")), "per_label": per_label}


def _mean_interval(values: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": None, "ci": None}

    def statistic(w: np.ndarray) -> dict[str, np.ndarray]:
        return {"mean": (w @ values) / w.sum(axis=1)}

    intervals = percentile_bootstrap(statistic, values.size, n_boot=n_boot, seed=seed) if n_boot > 0 else {}
    return {"mean": undefined_as_none(values.mean()), "ci": _ci(intervals.get("mean"))}


def _ci(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [float(interval[0]), float(interval[1])]
