"""Report sections for segmentation uncertainty (outer layer: renders results, computes nothing).

The numbers and arrays come from :func:`medsure.segmentation.evaluate.evaluate_segmentation`
(:class:`~medsure.segmentation.evaluate.SegmentationResults`) and
:func:`medsure.segmentation.conformal_mask.evaluate_conformal_mask`
(:class:`~medsure.segmentation.conformal_mask.ConformalMaskResults`), computed once by the CLI or
the demo and handed here.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medsure.report.html import Section, figure_to_data_uri, html_table, img_tag

if TYPE_CHECKING:  # results types only: this module imports no analysis code
    from medsure.segmentation.conformal_mask import ConformalMaskResults
    from medsure.segmentation.evaluate import SegmentationResults


def build_sections(
    segmentation: SegmentationResults | None = None,
    conformal: ConformalMaskResults | None = None,
    *,
    order: int = 60,
    test_thumbnails: np.ndarray | None = None,
    test_ids: Sequence[str] | None = None,
    test_truth: np.ndarray | None = None,
    n_examples: int = 8,
) -> list[Section]:
    """Segmentation-uncertainty sections of a report.

    Parameters
    ----------
    segmentation : results of ``evaluate_segmentation`` on the test images (summary, overlays,
        calibration and uncertainty-quality sections); None leaves them out
    conformal : results of ``evaluate_conformal_mask`` on the same test images (conformal-mask
        section, and the mask column of the overlays); None leaves them out
    order : sort key of the first section
    test_thumbnails, test_ids, test_truth : the test artifact's thumbnails ``(N, h, w[, C])``, ids
        ``(N,)`` and ground-truth masks ``(N, H, W)`` (or None); given with ``conformal`` alone, the
        conformal section shows up to ``n_examples`` images with the mask drawn as a contour
    n_examples : images shown there (those with a structure first)

    Returns
    -------
    list of Section: summary, overlays, reliability diagrams (with ``segmentation``), conformal
    masks (with ``conformal``).
    """
    sections: list[Section] = []
    if segmentation is not None:
        sections += _segmentation_sections(segmentation, conformal, order)
    if conformal is not None:
        examples = None
        if segmentation is None and test_ids is not None:
            examples = (test_thumbnails, list(map(str, test_ids)), test_truth, n_examples)
        sections.append(_conformal_section(conformal, order + 3, examples))
    return sections


def _segmentation_sections(r: SegmentationResults, conformal: ConformalMaskResults | None, order: int) -> list[Section]:
    from medsure.segmentation import plots

    names = list(r.labels)
    rows = [
        {"label": n, "Dice": _na(r.dice[n]), "HD95 (px)": _na(r.hd95[n]), "HD95 undefined": r.hd95_n_undefined[n]}
        for n in names
    ]
    summary_rows = [
        ("pixel ECE (equal-width / equal-mass bins) / MCE", f"{r.ece:.4f} / {r.ece_equal_mass:.4f} / {r.mce:.4f}"),
        (f"boundary-band ECE (±{r.boundary_width} px, {r.boundary_pixel_fraction:.1%} of pixels)", _f(r.ece_boundary)),
        ("segment-level ECE (mean confidence vs Dice)", _f(r.segment_ece)),
        (f"UEO (best, {r.uncertainty} > {r.ueo_threshold:.3f})", _f(r.ueo)),
        (f"Spearman(image uncertainty [{r.image_reduce}], Dice)", _f(r.dice_pred_corr)),
        ("Dice predictor, 2-fold cross-fitted on these images: MAE", _f(r.dice_pred_mae)),
    ]
    if r.dice_predictor is not None:
        summary_rows.append(
            (
                f"Dice predictor fitted on {r.n_cal_images} cal images: test MAE / Pearson",
                f"{_f(r.dice_predictor['mae'])} / {_f(r.dice_predictor['pearson'])}",
            )
        )
    if r.shift_auroc is not None:
        summary_rows.append(
            (
                f"shift AUROC [{r.image_reduce}] ({r.n_shift_images} shifted vs {r.n_images} test images)",
                _f(r.shift_auroc),
            )
        )
    kind = r.sample_kind or "single model"
    body = (
        f"<p>{r.n_images} test images, {len(names)} foreground label(s); uncertainty from "
        f"<b>{html.escape(kind)}</b> ({r.n_model_samples} sample(s)), per-pixel "
        f"{html.escape(r.uncertainty)}, image-level reduction <code>{html.escape(r.image_reduce)}</code>. "
        "Dice is NaN (excluded) where a label is absent from both prediction and ground truth; HD95 is "
        "undefined where either is empty.</p>" + html_table(rows) + html_table(summary_rows, header=["metric", "value"])
    )
    if r.shift_auroc_by_reduction is not None:
        reduction_rows = [
            {
                "image reduction": name + (" (used)" if name == r.image_reduce else ""),
                "shift AUROC": auc,
                "Spearman with Dice": _na(r.dice_spearman_by_reduction.get(name)),
            }
            for name, auc in r.shift_auroc_by_reduction.items()
        ]
        body += (
            "<p>Shift detection by every image-level reduction of the uncertainty map (which one "
            "works depends on the shift; see benchmarks/segmentation_shift.md):</p>" + html_table(reduction_rows)
        )
    summary: dict[str, Any] = {
        "ece": r.ece,
        "ece_boundary": r.ece_boundary,
        "segment_ece": r.segment_ece,
        "ueo": r.ueo,
        "dice_pred_corr": r.dice_pred_corr,
    }
    if r.shift_auroc_by_reduction is not None:
        summary["shift_auroc_by_reduction"] = r.shift_auroc_by_reduction
    sections = [Section("Segmentation uncertainty: summary", body, key="seg-summary", order=order, summary=summary)]

    if r.examples is not None and r.examples.index.size:
        ex = r.examples
        titles = [f"{i}\nDice {d:.2f}" for i, d in zip(ex.ids, ex.dice, strict=True)]
        masks_shown = None if conformal is None else conformal.test_masks[ex.index]
        fig = plots.overlay_figure(
            masks=ex.masks,
            predicted=ex.predicted,
            uncertainty=ex.uncertainty,
            conformal=masks_shown,
            titles=titles,
            n_classes=len(names) + 1,
            thumbnails=ex.thumbnails,
            uncertainty_name=r.uncertainty,
            alpha=None if conformal is None else conformal.alpha,
        )
        sections.append(
            Section(
                "Segmentation uncertainty: prediction, uncertainty and error maps",
                "<p>Rows run from the worst to the best test Dice. Uncertainty should light up where the "
                "error map does"
                + (
                    "; the conformal mask (yellow, ground truth outlined in cyan) should cover the structure"
                    if conformal is not None
                    else ""
                )
                + ".</p>"
                + img_tag(
                    figure_to_data_uri(fig),
                    f"{len(ex.ids)} test images from worst to best Dice; columns: ground truth, prediction, "
                    f"{r.uncertainty} map with its colour bar, error map"
                    + (", conformal mask outlined in yellow over the image" if conformal is not None else ""),
                ),
                key="seg-overlays",
                order=order + 1,
            )
        )

    fig = plots.reliability_figure(
        [
            ("all pixels", r.reliability["all pixels"], r.ece),
            ("boundary band", r.reliability["boundary band"], r.ece_boundary),
        ]
    )
    fig2 = plots.segment_and_ueo_figure(
        r.segment_confidence,
        r.segment_dice,
        np.asarray(r.ueo_curve["thresholds"]),
        np.asarray(r.ueo_curve["ueo"]),
        r.image_scores,
        r.image_dice,
        uncertainty_name=r.uncertainty,
    )
    sections.append(
        Section(
            "Segmentation uncertainty: calibration and uncertainty quality",
            "<p>Pixel reliability over all pixels is dominated by easy background; the boundary band "
            "keeps only pixels near a predicted or true contour.</p>"
            + img_tag(
                figure_to_data_uri(fig),
                "Pixel reliability diagrams (accuracy against confidence per bin) for all pixels and for the "
                "boundary band, with the diagonal of perfect calibration",
            )
            + img_tag(
                figure_to_data_uri(fig2),
                "Three panels: segment confidence against Dice, uncertainty-error overlap against the "
                "uncertainty threshold, image uncertainty against image Dice",
            ),
            key="seg-calibration",
            order=order + 2,
        )
    )
    return sections


def _conformal_section(c: ConformalMaskResults, order: int, examples: tuple | None = None) -> Section:
    from medsure.segmentation import plots

    fig = plots.fnr_figure(c.grid, c.cal_fnr_curves, dict(zip(c.labels, map(float, c.lambda_), strict=True)), c.alpha)
    on_average = "bound α = {a} holds on average over calibration draws and images; this number is one draw"
    rows = [
        {
            "label": n,
            "λ̂": float(c.lambda_[j]),
            "cal images": int(c.n_cal[j]),
            "test mean FNR (realised)": _na(c.fnr[j]),
            "guarantee": on_average.format(a=c.alpha),
            "test images with FNR > α": _na(c.fnr_above_alpha[j]),
            "mask / image area": float(c.mask_fraction[j]),
            "arg-max area": float(c.argmax_fraction[j]),
        }
        for j, n in enumerate(c.labels)
    ]
    policy = (
        "images without the structure count as FNR 0"
        if c.empty_gt == "zero"
        else "images without the structure are excluded"
    )
    realised = ", ".join(f"{html.escape(n)} {_f(c.fnr[j])}" for j, n in enumerate(c.labels))
    body = (
        f"<p>Conformal risk control (Angelopoulos et al. 2022) picks λ̂ per label on "
        f"{int(np.max(c.n_cal))} calibration images so that the expected per-image false-negative rate of "
        f"the mask {{p ≥ λ̂}} on a new image is at most α = {c.alpha} ({policy}).</p>"
        f"<p class='guarantee'>Realised test mean FNR: {realised}. <b>This is one draw:</b> the bound "
        f"α = {c.alpha} holds <b>on average over calibration draws</b> (and over images), not for this "
        "particular calibration set and not for every image; a realised value somewhat above α is "
        "expected in some draws.</p>" + html_table(rows)
    )
    body += img_tag(
        figure_to_data_uri(fig),
        f"Mean false-negative rate on the calibration images against the pixel threshold λ, one curve per "
        f"label, with the chosen λ̂ dotted and α = {c.alpha} dashed",
    )
    if examples is not None:
        thumbnails, ids, truth, n_examples = examples
        has = (
            np.flatnonzero(truth.reshape(len(truth), -1).max(axis=1) > 0) if truth is not None else np.arange(len(ids))
        )
        shown = np.concatenate([has, np.setdiff1d(np.arange(len(ids)), has)])[:n_examples]
        if shown.size:
            ov = plots.conformal_overlay_figure(
                thumbnails=None if thumbnails is None else thumbnails[shown],
                conformal=c.test_masks[shown],
                truth=None if truth is None else truth[shown],
                titles=[ids[i] for i in shown],
                alpha=c.alpha,
            )
            body += img_tag(
                figure_to_data_uri(ov),
                f"{len(shown)} test images, each with the conformal mask outlined in yellow and the ground "
                "truth outlined in cyan (dashed)",
            )
    return Section(
        f"Segmentation uncertainty: conformal masks (α = {c.alpha})",
        body,
        key="seg-conformal",
        order=order,
        summary={"lambda": np.asarray(c.lambda_).tolist(), "fnr": list(c.fnr)},
    )


def _na(value):
    """A value for a table cell: undefined (None or NaN) shows as n/a."""
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else value


def _f(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{float(value):.4f}"
