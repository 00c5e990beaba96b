"""Report sections every run gets: performance, training curves, example overlays."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from medsure.artifact import Predictions
from medsure.report.html import Section, figure_to_data_uri, html_table, img_tag


def _literal(text: Any) -> str:
    """Text shown as is by matplotlib: a '$' in an id or class name would start math mode."""
    return str(text).replace("$", r"\$")


def confusion_figure(cm: np.ndarray, class_names: Sequence[str]):
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(3.2 + 0.4 * len(class_names), 2.8 + 0.4 * len(class_names)))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black"
            )
    labels = [_literal(c) for c in class_names]
    ax.set_xticks(range(len(class_names)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test)")
    return fig


def training_curves_figure(history: list[dict[str, Any]], title: str):
    """Plot every numeric per-epoch key of a trainer history (loss and metrics)."""
    keys = sorted(
        {
            k
            for row in history
            for k, v in row.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )
    loss_keys = [k for k in keys if "loss" in k]
    metric_keys = [k for k in keys if "loss" not in k and k not in ("lr", "seconds", "time")]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for ax, group, label in ((axes[0], loss_keys, "loss"), (axes[1], metric_keys, "metric")):
        for key in group:
            ax.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if group:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _or_na(value: Any) -> Any:
    return "n/a" if value is None else value


def classification_section(
    summary: dict[str, Any],
    test: Predictions,
    *,
    history: list[dict[str, Any]] | None = None,
    title: str = "Classification performance",
) -> Section:
    """Render a :func:`medsure.evaluation.classification_summary` of ``test`` (computed by the
    caller): overall table, per-class precision / recall / F1, confusion matrix, training curves."""
    rows = [
        {
            "n test": summary["n"],
            "accuracy": summary["accuracy"],
            f"loss (mean cross-entropy, clip {summary['log_loss_clip']:g})": summary["log_loss"],
            "AUC": _or_na(summary["auc"]),
            "macro F1": _or_na(summary["macro_f1"]),
        }
    ]
    body = html_table(rows)
    body += html_table(
        [
            {
                "class": name,
                "precision": _or_na(m["precision"]),
                "recall": _or_na(m["recall"]),
                "F1": _or_na(m["f1"]),
                "support": m["support"],
            }
            for name, m in summary["per_class"].items()
        ]
    )
    body += img_tag(
        figure_to_data_uri(confusion_figure(np.array(summary["confusion_matrix"]), summary["class_names"])),
        "Confusion matrix of the test cases: true class in rows, predicted class in columns, counts in cells",
    )
    if history:
        body += img_tag(
            figure_to_data_uri(training_curves_figure(history, "Training curves")),
            "Training curves: loss and validation metric per epoch",
        )
    body += f"<p>Provenance: <code>{html.escape(_provenance_line(test))}</code></p>"
    return Section(title, body, key="classification", order=10, summary=summary)


def overlay_figure(
    images: np.ndarray,
    masks: np.ndarray,
    predicted: np.ndarray,
    ids: Sequence[str],
    dice: np.ndarray,
    n_classes: int | None = None,
):
    """Rows of image | ground truth | prediction for a few examples (``n_classes`` fixes the
    label colours so ground truth and prediction share them)."""
    n_classes = int(max(masks.max(), predicted.max()) + 1) if n_classes is None else n_classes
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6.5, 2.2 * n), squeeze=False)
    for i in range(n):
        img = images[i]
        cmap = "gray" if img.ndim == 2 else None
        for j, (overlay, name) in enumerate(
            ((None, "image"), (masks[i], "ground truth"), (predicted[i], f"prediction (Dice {dice[i]:.2f})"))
        ):
            ax = axes[i, j]
            ax.imshow(img, cmap=cmap)
            if overlay is not None:
                ax.imshow(np.ma.masked_equal(overlay, 0), cmap="autumn", alpha=0.5, vmin=0, vmax=max(1, n_classes - 1))
            ax.set_title(_literal(f"{ids[i]}: {name}") if j == 0 else name, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return fig


def segmentation_section(
    summary: dict[str, Any],
    test: Predictions,
    *,
    image_dice: np.ndarray | None = None,
    images: np.ndarray | None = None,
    history: list[dict[str, Any]] | None = None,
    n_examples: int = 4,
    title: str = "Segmentation performance",
) -> Section:
    """Dice table, training curves and overlays, rendered from precomputed results.

    Parameters
    ----------
    summary : ``medsure.evaluation.segmentation_summary(test)`` (``n``, ``dice_per_label``),
        computed by the caller
    test : the predictions summarised (overlay labels and provenance are read from it)
    image_dice : per-image Dice (N,) of ``test``, e.g. ``SegmentationResults.image_dice``; with
        ``images`` it adds an overlay figure of the first images with foreground
    images : (N, H, W) or (N, H, W, 3) display images of ``test``
    """
    rows = [{"label": k, "mean Dice": v if v is not None else "n/a"} for k, v in summary["dice_per_label"].items()]
    body = f"<p>{summary['n']} test images.</p>" + html_table(rows)
    if history:
        body += img_tag(
            figure_to_data_uri(training_curves_figure(history, "Training curves")),
            "Training curves: loss and validation metric per epoch",
        )
    if images is not None and image_dice is not None and test.masks is not None:
        predicted = test.probabilities().argmax(axis=1)  # the shown label map, not a metric
        shown_dice = np.nan_to_num(np.asarray(image_dice, dtype=float), nan=1.0)  # both empty: a perfect empty map
        has_fg = test.masks.reshape(test.n_samples, -1).max(axis=1) > 0
        order = np.flatnonzero(has_fg)[:n_examples] if has_fg.any() else np.arange(min(n_examples, test.n_samples))
        body += img_tag(
            figure_to_data_uri(
                overlay_figure(
                    images[order],
                    test.masks[order],
                    predicted[order],
                    [str(i) for i in test.ids[order]],
                    shown_dice[order],
                    test.n_classes,
                )
            ),
            "Test images with their ground truth and predicted masks overlaid, one row per image, with its Dice",
        )
    body += f"<p>Provenance: <code>{html.escape(_provenance_line(test))}</code></p>"
    return Section(title, body, key="segmentation", order=20, summary=summary)


def _provenance_line(pred: Predictions) -> str:
    """One readable line: where the images came from, whether their checksum matched, which
    split and which trained run produced the predictions (the full record stays in the file)."""
    prov = pred.provenance or {}
    parts = []
    data = prov.get("dataset")
    if isinstance(data, dict):
        name = data.get("dataset") or data.get("name") or "?"
        verified = data.get("verified")
        parts.append(
            f"dataset {name} ({data.get('source', '?')}"
            + ("" if verified is None else f", MD5 {'verified' if verified else 'NOT verified'}")
            + ")"
        )
        split = data.get("split")
        if isinstance(split, dict):
            parts.append(f"split {split.get('name', '?')} (seed {split.get('seed', '?')}, n={split.get('n', '?')})")
        leak = data.get("near_duplicates_of_train")
        if isinstance(leak, dict) and leak.get("count"):
            parts.append(
                f"WARNING: {leak['count']} of {leak['of']} official held-out images nearly duplicate a "
                f"training image ({leak.get('method', '')}; meta 'near_dup_of_train')"
            )
    elif data is not None:
        parts.append(f"dataset {data}")
    run = prov.get("run")
    if isinstance(run, dict):
        model = (run.get("config") or {}).get("model") or {}
        parts.append(f"model {model.get('name', '?')} from {run.get('run_dir', '?')}")
    if prov.get("mc_samples"):
        parts.append(f"{prov['mc_samples']} MC-dropout samples")
    if "seed" in prov:
        parts.append(f"seed {prov['seed']}")
    return "; ".join(parts) or "not recorded"
