"""Report section of the joint analysis: renders a :class:`~medsure.evidential.analysis.JointResults`
(summary table and the joint view of test cases). It computes nothing."""

from __future__ import annotations

import html
from typing import Any

from medsure.evidential.analysis import JointResults
from medsure.report.html import Section, figure_to_data_uri, html_table, img_tag

__all__ = ["build_sections"]


def _num(value: float | None) -> str | float:
    return "n/a (undefined)" if value is None else value


def build_sections(result: JointResults, *, order: int = 45) -> list[Section]:
    """One section: what the joint model's uncertainty says, then the gallery of test cases."""
    from medsure.evidential.plots import plot_joint_cases

    rows: list[dict[str, Any]] = [
        {"quantity": "classification accuracy", "value": result.accuracy},
        {"quantity": "ECE of the expected probabilities", "value": result.ece},
        {"quantity": f"conformal coverage ({result.method}, target {1 - result.alpha:.0%})", "value": result.coverage},
        {"quantity": "mean class-set size", "value": result.mean_set_size},
        {"quantity": "mean image u (K/S)", "value": result.mean_class_u},
        {"quantity": "AUROC of image u for misclassified cases", "value": _num(result.u_error_auroc)},
        {"quantity": "mean Dice (foreground)", "value": _num(result.mean_dice)},
        {"quantity": "mean pixel u", "value": result.mean_seg_u},
        {"quantity": "Spearman(image mean pixel u, Dice)", "value": _num(result.seg_u_dice_spearman)},
    ]
    auroc = result.u_error_auroc
    reading = (
        "u ranks misclassified cases above correct ones better than chance"
        if auroc is not None and auroc > 0.5
        else "u does not flag the misclassified cases here (AUROC at or below 0.5, or undefined)"
    )
    body = (
        f"<p>Joint model: class sets fitted on {result.n_cal} calibration cases, measured on {result.n_test} test "
        f"cases. The coverage guarantee ({1 - result.alpha:.0%}) holds on average over calibration draws, not for "
        f"this one realised set of cases. Image u = K/S is the Dirichlet's uncertainty mass (1: no evidence); "
        f"{html.escape(reading)}.</p>" + html_table(rows)
    )
    if result.cases:
        fig = plot_joint_cases(result.cases)
        body += "<p>Test cases with the highest and the lowest image u:</p>" + img_tag(
            figure_to_data_uri(fig),
            "Joint view, one row per test case: the image with its true class; the predicted mask in blue with "
            "the true mask outlined in red and the Dice; the pixel uncertainty map u with the conformal class "
            "set and the image u",
        )
    summary = {k: v for k, v in result.to_dict().items() if k not in ("cases", "conformal")}
    return [
        Section(
            title="Joint classification and segmentation", body_html=body, key="joint", order=order, summary=summary
        )
    ]
