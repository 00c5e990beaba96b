"""Report sections for segmentation uncertainty (outer layer: HTML only here)."""
from __future__ import annotations

import html

import numpy as np

from medsure.artifact import Predictions, check_compatible
from medsure.report.html import Section, figure_to_data_uri, html_table, img_tag
from medsure.segmentation.calibration import calibration_bins, pixel_confidence
from medsure.segmentation.conformal_mask import ConformalMask, fnr_curve
from medsure.segmentation.evaluate import evaluate_segmentation, require_segmentation
from medsure.segmentation.metrics import DicePredictor, dice_per_label, image_dice, segment_calibration
from medsure.segmentation.regions import boundary_band
from medsure.segmentation.uncertainty import image_uncertainty, uncertainty_maps


def build_sections(cal: Predictions, test: Predictions, *, shift: Predictions | None = None,
                   alpha: float = 0.1, uncertainty: str = "entropy", n_examples: int = 4,
                   order: int = 60) -> list[Section]:
    """Segmentation-uncertainty sections for the demo report.

    Parameters
    ----------
    cal, test : labelled segmentation predictions of one model (cal fits the conformal mask and
        the Dice predictor; everything else is measured on test)
    shift : optional predictions of the same model on shifted images (shift-detection AUROC)
    alpha : target expected FNR of the conformal masks
    uncertainty : per-pixel map shown and used for UEO / Dice prediction / shift
    n_examples : images in the overlay gallery (worst, median and best Dice among them)
    order : sort key of the first section

    Returns
    -------
    list of Section: metrics summary, overlays, reliability diagrams, conformal masks.
    """
    from medsure.segmentation import plots

    require_segmentation(cal, "cal")
    require_segmentation(test, "test")
    check_compatible(cal, test)
    k = test.n_classes
    names = [str(c) for c in test.class_names[1:]]
    maps = uncertainty_maps(test)
    metrics = evaluate_segmentation(test, shift=shift, uncertainty=uncertainty, maps=maps)
    probs, predicted, masks = maps["probabilities"], maps["predicted"], test.masks
    umap = maps[uncertainty]
    dice = dice_per_label(predicted, masks, k)
    per_image = image_dice(dice)
    scores = image_uncertainty(umap, predicted, reduce="foreground_mean")

    cal_maps = uncertainty_maps(cal)
    cal_scores = image_uncertainty(cal_maps[uncertainty], cal_maps["predicted"], reduce="foreground_mean")
    cal_dice = image_dice(dice_per_label(cal_maps["predicted"], cal.masks, k))
    predictor = DicePredictor().fit(cal_scores, cal_dice)
    predictor_score = predictor.score(scores, per_image)

    conformal = ConformalMask(alpha=alpha).calibrate(cal)
    test_fnr = conformal.fnr(test)
    sets = conformal.predict(test)

    # ---- summary ------------------------------------------------------------------------
    rows = [{"label": n, "Dice": metrics["dice"][n], "HD95 (px)": metrics["hd95"][n],
             "HD95 undefined": metrics["hd95_n_undefined"][n]} for n in names]
    summary_rows = [
        ("pixel ECE / ACE / MCE", f"{metrics['ece']:.4f} / {metrics['ace']:.4f} / {metrics['mce']:.4f}"),
        (f"boundary-band ECE (±{metrics['boundary_width']} px, {metrics['boundary_pixel_fraction']:.1%} of pixels)",
         _f(metrics["ece_boundary"])),
        ("segment-level ECE (mean confidence vs Dice)", _f(metrics["segment_ece"])),
        (f"UEO (best, {uncertainty} > {metrics['ueo_threshold']:.3f})", _f(metrics["ueo"])),
        ("Spearman(image uncertainty, Dice)", _f(metrics["dice_pred_corr"])),
        ("Dice predictor fitted on cal: test MAE / Pearson",
         f"{_f(predictor_score['mae'])} / {_f(predictor_score['pearson'])}"),
    ]
    if shift is not None:
        summary_rows.append((f"shift AUROC ({shift.n_samples} shifted vs {test.n_samples} test images)",
                             _f(metrics["shift_auroc"])))
    kind = test.sample_kind or "single model"
    body = (f"<p>{test.n_samples} test images, {k - 1} foreground label(s); uncertainty from "
            f"<b>{html.escape(kind)}</b> ({metrics['n_model_samples']} sample(s)), per-pixel "
            f"{html.escape(uncertainty)}. Dice is NaN (excluded) where a label is absent from both "
            "prediction and ground truth; HD95 is undefined where either is empty.</p>"
            + html_table(rows) + html_table(summary_rows, header=["metric", "value"]))
    sections = [Section("Segmentation uncertainty: summary", body, key="seg-summary", order=order,
                        summary={k_: metrics[k_] for k_ in ("ece", "ece_boundary", "segment_ece", "ueo",
                                                            "dice_pred_corr") if k_ in metrics})]

    # ---- overlays -----------------------------------------------------------------------
    finite = np.flatnonzero(np.isfinite(per_image))
    ranked = finite[np.argsort(per_image[finite])] if finite.size else np.arange(test.n_samples)
    # worst → best Dice; dict.fromkeys drops repeats without losing that order
    spread = ranked[np.linspace(0, ranked.size - 1, min(n_examples, ranked.size)).astype(int)]
    picks = np.array(list(dict.fromkeys(spread.tolist())), dtype=int)
    titles = [f"{test.ids[i]}\nDice {per_image[i]:.2f}" for i in picks]
    thumbs = None if test.thumbnails is None else test.thumbnails[picks]
    fig = plots.overlay_figure(masks=masks[picks], predicted=predicted[picks], uncertainty=umap[picks],
                               conformal=sets[picks], titles=titles, n_classes=k, thumbnails=thumbs,
                               uncertainty_name=uncertainty, alpha=alpha)
    sections.append(Section(
        "Segmentation uncertainty: prediction, uncertainty and error maps",
        "<p>Rows run from the worst to the best test Dice. Uncertainty should light up where the "
        "error map does; the conformal mask (yellow, ground truth outlined in cyan) should cover "
        "the structure.</p>" + img_tag(figure_to_data_uri(fig), "overlays"),
        key="seg-overlays", order=order + 1))

    # ---- reliability ----------------------------------------------------------------------
    conf, correct = pixel_confidence(probs, masks)
    band = boundary_band(predicted, masks, width=metrics["boundary_width"])
    fig = plots.reliability_figure([
        ("all pixels", calibration_bins(conf, correct), metrics["ece"]),
        ("boundary band", calibration_bins(conf[band], correct[band]), metrics["ece_boundary"]),
    ])
    segments = segment_calibration(probs, masks)
    fig2 = plots.segment_and_ueo_figure(segments["confidence"], segments["dice"],
                                        np.asarray(metrics["ueo_curve"]["thresholds"]),
                                        np.asarray(metrics["ueo_curve"]["ueo"]), scores, per_image,
                                        uncertainty_name=uncertainty)
    sections.append(Section(
        "Segmentation uncertainty: calibration and uncertainty quality",
        "<p>Pixel reliability over all pixels is dominated by easy background; the boundary band "
        "keeps only pixels near a predicted or true contour.</p>"
        + img_tag(figure_to_data_uri(fig), "pixel reliability") + img_tag(figure_to_data_uri(fig2), "UEO"),
        key="seg-calibration", order=order + 2))

    # ---- conformal masks ------------------------------------------------------------------
    grid = np.linspace(0.0, 1.0, 101)
    cal_probs = cal_maps["probabilities"]
    curves = {n: fnr_curve(cal_probs[:, j + 1], cal.masks == j + 1, grid).mean(axis=0)
              for j, n in enumerate(names)}
    fig = plots.fnr_figure(grid, curves, dict(zip(names, map(float, conformal.lambda_))), alpha)
    rows = [{"label": n, "λ̂": float(conformal.lambda_[j]), "test mean FNR": float(test_fnr[:, j].mean()),
             "test images with FNR > α": float(np.mean(test_fnr[:, j] > alpha)),
             "mask / image area": float(sets[:, j].mean()),
             "arg-max area": float((predicted == j + 1).mean())}
            for j, n in enumerate(names)]
    sections.append(Section(
        f"Segmentation uncertainty: conformal masks (α = {alpha})",
        f"<p>Conformal risk control (Angelopoulos et al. 2022) picks λ̂ per label on "
        f"{cal.n_samples} calibration images so that the expected per-image false-negative rate of "
        f"the mask {{p ≥ λ̂}} on a new image is at most α = {alpha} (images without the structure "
        "count as FNR 0). The guarantee is on the average over images, not on every image.</p>"
        + html_table(rows) + img_tag(figure_to_data_uri(fig), "FNR curve"),
        key="seg-conformal", order=order + 3,
        summary={"lambda": conformal.lambda_.tolist(), "fnr": test_fnr.mean(axis=0).tolist()}))
    return sections


def _f(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{float(value):.4f}"
