"""Figures for the conformal analyses (outer layer: matplotlib only here). Each function takes the
JSON-ready result of the matching :mod:`medsure.conformal.analysis` function and returns a
matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_calibration_size(result: dict[str, Any]):
    """Observed coverage of every split per calibration size, against the exact band."""
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = np.arange(len(rows))
    for x, row in zip(xs, rows, strict=True):
        lo, hi = row["band"]
        ax.fill_between(
            [x - 0.35, x + 0.35], lo, hi, color="tab:green", alpha=0.2, lw=0, label="exact band" if x == 0 else None
        )
        jitter = np.random.default_rng(x).uniform(-0.25, 0.25, len(row["coverages"]))
        ax.scatter(
            x + jitter, row["coverages"], s=6, color="tab:blue", alpha=0.5, label="one split" if x == 0 else None
        )
        ax.plot([x - 0.35, x + 0.35], [row["mean"]] * 2, color="k", lw=2, label="mean over splits" if x == 0 else None)
    ax.axhline(1 - result["alpha"], color="tab:red", ls="--", lw=1, label="target 1-α")
    ax.set_xticks(xs, [f"{r['n_cal']}" for r in rows])
    ax.set_xlabel("calibration size")
    ax.set_ylabel("test coverage")
    ax.set_title(f"{result['method']}: coverage over {result['n_repeats']} random splits per size")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_confidence_sweep(result: dict[str, Any]):
    """Coverage (with its band) and mean set size against the confidence level 1-α."""
    rows = result["rows"]
    levels = np.array([r["level"] for r in rows])
    cov = np.array([r["coverage"] for r in rows])
    band = np.array([r["band"] for r in rows])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    ax1.fill_between(levels, band[:, 0], band[:, 1], color="tab:green", alpha=0.25, label="exact band")
    ax1.plot(levels, cov, "o-", label="observed")
    ax1.plot(levels, levels, "k--", lw=1, label="y = 1-α")
    ax1.set_xlabel("confidence level 1-α")
    ax1.set_ylabel("test coverage")
    ax1.legend(fontsize=8)
    ax2.plot(levels, [r["mean_set_size"] for r in rows], "o-", color="tab:orange")
    ax2.set_xlabel("confidence level 1-α")
    ax2.set_ylabel("mean set size")
    fig.suptitle(f"{result['method']}: confidence sweep")
    fig.tight_layout()
    return fig


def plot_method_comparison(result: dict[str, Any]):
    """Coverage (against each run's band) and mean set size of every method."""
    rows = [r for r in result["rows"] if "error" not in r]
    labels = [f"{r['name']}\n{'class' if r['conditional'] == 'class' else 'marg.'}" for r in rows]
    xs = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(7, 0.7 * len(rows)), 6), sharex=True)
    for x, r in zip(xs, rows, strict=True):
        lo, hi = r["coverage_band"]
        ax1.plot([x, x], [lo, hi], color="tab:green", lw=6, alpha=0.35)
        ax1.plot(x, r["coverage"], "o", color="tab:blue" if r["valid"] else "tab:red")
    ax1.axhline(1 - result["alpha"], color="tab:red", ls="--", lw=1)
    ax1.set_ylabel("coverage (band in green)")
    ax2.bar(xs, [r["mean_set_size"] for r in rows], color="tab:orange")
    ax2.set_ylabel("mean set size")
    ax2.set_xticks(xs, labels, fontsize=7, rotation=45, ha="right")
    fig.suptitle(f"method comparison at α = {result['alpha']:g} (red dot: outside band)")
    fig.tight_layout()
    return fig


def plot_class_overlap(result: dict[str, Any]):
    """Heatmap: share of true-class-i samples whose set contains class j."""
    matrix = np.asarray(result["matrix"])
    names = result["class_names"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(names), 1 + 0.7 * len(names)))
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{matrix[i, j]:.2f}",
                ha="center",
                va="center",
                color="w" if matrix[i, j] < 0.6 else "k",
                fontsize=8,
            )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("class in the set")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("class overlap in prediction sets")
    fig.tight_layout()
    return fig


def plot_hardest_cases(result: dict[str, Any], thumbnails: np.ndarray | None, class_names: Sequence[str]):
    """Thumbnails of the samples with the largest sets, titled with the set and the truth."""
    cases = result["cases"]
    cols = min(6, max(1, len(cases)))
    rows = int(np.ceil(len(cases) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, case in zip(axes.ravel(), cases, strict=False):  # the grid may have more cells than cases
        if thumbnails is not None:
            img = thumbnails[case["index"]]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        else:
            ax.text(0.5, 0.5, case["id"], ha="center", va="center", fontsize=8)
        members = ", ".join(str(class_names[j]) for j in case["set"]) or "∅"
        ax.set_title(
            f"true: {class_names[case['label']]}\nset: {members}",
            fontsize=7,
            color="k" if case["covered"] else "tab:red",
        )
    fig.suptitle("largest prediction sets (red title: true label missed)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_set_sizes(metrics: dict[str, Any], title: str = "set sizes"):
    """Histogram of set sizes with the coverage of each size on top."""
    hist = np.asarray(metrics["size_histogram"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(np.arange(hist.size), hist / max(hist.sum(), 1), color="tab:blue")
    for row in metrics.get("size_stratified_coverage") or []:  # absent without test labels
        ax.text(
            row["size"],
            row["count"] / max(hist.sum(), 1),
            f"cov {row['coverage']:.2f}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xlabel("set size")
    ax.set_ylabel("share of test samples")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_class_coverage_stability(result: dict[str, Any]):
    """Per class: mean coverage over the splits with its 5-95% range, against calibration size.

    Takes the result of :func:`medsure.conformal.analysis.calibration_size_study`; the legend
    gives each class's pooled count, so a rare class's wide range reads as what it is.
    """
    rows = result["rows"]
    levels = result["quantile_levels"]
    lo_i, hi_i = levels.index(0.05), levels.index(0.95)
    xs = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    n_classes = len(result["class_names"])
    offsets = np.linspace(-0.25, 0.25, n_classes) if n_classes > 1 else np.zeros(1)
    for j, name in enumerate(result["class_names"]):
        entries = [r["per_class"][j] for r in rows]
        ok = [e["mean"] is not None for e in entries]
        x = xs[ok] + offsets[j]
        mean = np.array([e["mean"] for e in entries if e["mean"] is not None])
        low = np.array([e["quantiles"][lo_i] for e in entries if e["quantiles"] is not None])
        high = np.array([e["quantiles"][hi_i] for e in entries if e["quantiles"] is not None])
        # the range is drawn as it is, not as error bars around the mean: on a skewed spread (a rare
        # class covered in most splits and missed in a few) the mean can lie outside its 5-95% range
        (line,) = ax.plot(x, mean, "o-", ms=4, label=f"{name} (n={result['class_counts'][j]})")
        ax.vlines(x, low, high, color=line.get_color(), lw=1.5)
        ax.scatter(np.r_[x, x], np.r_[low, high], marker="_", s=40, color=line.get_color())
    ax.axhline(1 - result["alpha"], color="tab:red", ls="--", lw=1, label="target 1-α")
    ax.set_xticks(xs, [f"{r['n_cal']}" for r in rows])
    ax.set_xlabel("calibration size")
    ax.set_ylabel("class-conditional coverage")
    ax.set_title(f"{result['method']}: per-class coverage over {result['n_repeats']} splits (bars: 5-95%)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_confused_pairs(result: dict[str, Any], thumbnails: np.ndarray | None, class_names: Sequence[str]):
    """One row per confused class pair: thumbnails of its hardest cases whose set holds both."""
    pairs = result["pairs"]
    cols = max(1, max((len(p["cases"]) for p in pairs), default=1))
    fig, axes = plt.subplots(len(pairs), cols, figsize=(2.1 * cols, 2.5 * len(pairs)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for row, pair in enumerate(pairs):
        a, b = pair["classes"]
        axes[row, 0].text(
            -0.15,
            0.5,
            f"{class_names[a]}\n/ {class_names[b]}",
            transform=axes[row, 0].transAxes,
            ha="right",
            va="center",
            fontsize=8,
        )
        for ax, case in zip(axes[row], pair["cases"], strict=False):  # a pair may have fewer cases than columns
            if thumbnails is not None:
                img = thumbnails[case["index"]]
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            else:
                ax.text(0.5, 0.5, case["id"], ha="center", va="center", fontsize=8)
            ax.set_title(
                f"true: {class_names[case['label']]}\nsize {case['set_size']}, p(true) {case['p_true']:.2f}",
                fontsize=7,
                color="k" if case["covered"] else "tab:red",
            )
    fig.suptitle("hardest cases per confused class pair (sets contain both; red: true label missed)", fontsize=9)
    fig.tight_layout()
    return fig
