"""Report sections for failure detection: they render a
:class:`~medsure.failure.evaluate.FailureResult` (CSF table, risk-coverage curves, the review
threshold with its guarantee, the most confident wrong cases with thumbnails). They compute
nothing: every number comes from the result."""

from __future__ import annotations

import html
from typing import Any

from medsure.artifact import Predictions
from medsure.failure.evaluate import FailureResult
from medsure.report.html import Section, figure_to_data_uri, html_table, image_to_data_uri, img_tag

__all__ = ["build_sections", "csf_table_rows"]

_SHIFT_CAUTION = (
    "<p><b>Caution:</b> the review guarantee assumes test cases exchangeable with the calibration "
    "cases; under a shift it may not hold. Shown for comparison.</p>"
)


def _fmt_ci(metric: dict[str, Any]) -> str:
    if metric["value"] is None:
        return "undefined"
    if not metric["ci"]:
        return f"{metric['value']:.4f}"
    lo, hi = metric["ci"]
    return f"{metric['value']:.4f} [{lo:.4f}, {hi:.4f}]"


def csf_table_rows(result: FailureResult) -> list[dict[str, str]]:
    """Rows sorted by AURC: name, AURC (discrete and fd-shifts trapezoid), e-AURC, AUGRC, AUROC_f,
    FPR@95 with 95 % intervals."""
    return [
        {
            "CSF": name,
            "AURC": _fmt_ci(m["aurc"]),
            "AURC (fd-shifts)": _fmt_ci(m["aurc_interpolated"]),
            "e-AURC": _fmt_ci(m["eaurc"]),
            "AUGRC": _fmt_ci(m["augrc"]),
            "AUROC_f": _fmt_ci(m["auroc_f"]),
            "FPR@95TPR": _fmt_ci(m["fpr95"]),
        }
        for name, m in result.ranked()
    ]


def _gallery(result: FailureResult, pred: Predictions | None) -> str:
    if not result.worst_cases:
        return "<p>No wrong predictions.</p>"
    figures = []
    for case in result.worst_cases:
        caption = (
            f"{html.escape(case['id'])}<br>predicted {html.escape(case['predicted'])} "
            f"({case['probability']:.2f}), truth {html.escape(case['truth'])}"
        )
        thumb = (
            img_tag(
                image_to_data_uri(pred.thumbnails[case["index"]]),
                f"image {case['id']}, predicted {case['predicted']}, truly {case['truth']}",
                width=96,
            )
            if pred is not None and pred.thumbnails is not None
            else ""
        )
        figures.append(f"<figure>{thumb}<figcaption>{caption}</figcaption></figure>")
    return "<div class='gallery'>" + "".join(figures) + "</div>"


def _combined_note(result: FailureResult) -> str:
    record = result.combined
    if record.get("status") == "undefined":
        return f"<p><b>Combined CSF undefined:</b> {html.escape(record['reason'])}</p>"
    weights = ", ".join(f"{html.escape(n)} {w:+.2f}" for n, w in zip(record["names"], record["weights"], strict=True))
    how = "learned on calibration data" if record["mode"] == "learned" else "fixed by the user"
    return f"<p>Combined CSF ({how}; weights over CSFs standardised on calibration data): {weights}.</p>"


def _review_html(review: dict[str, Any] | None) -> str:
    if review is None:
        return "<p>No review threshold was requested.</p>"
    text = (
        f"<p><b>Review threshold</b> ({html.escape(review['csf'])}; fitted on calibration data for selective "
        f"risk &le; {review['target_risk']} with probability &ge; {1 - review['delta']:.2f}): "
        f"{review['review_share']:.1%} of these cases go to an expert; the error among the rest is "
        f"{review['selective_risk']:.3f} ({review['n_errors_accepted']} of {review['n_accepted']}).</p>"
    )
    if not review["certified"] and review["tested"]:
        best = min(review["tested"], key=lambda t: t["bound"])
        text += (
            f"<p><b>No threshold could be certified</b> with {review['n_cal']} calibration cases: the lowest "
            f"bound found was {best['bound']:.3f} (accepting {best['coverage']:.1%} of calibration cases, "
            f"empirical error {best['risk']:.3f}), above the target {review['target_risk']}. More calibration "
            "data, a looser target or a better model is needed before any case can skip review.</p>"
        )
    return text


def _block(name: str, result: FailureResult, pred: Predictions | None) -> tuple[str, dict[str, Any]]:
    from medsure.failure.plots import plot_risk_coverage

    review = result.review
    fig = plot_risk_coverage(
        result.curves,
        title=f"{name}: {result.n_test} cases, error rate {result.error_rate:.3f}",
        review_coverage=review["coverage"] if review else None,
        target_risk=review["target_risk"] if review else None,
    )
    body = (
        f"<h3>{html.escape(name)}</h3>"
        f"<p>{result.n_test} cases, {result.n_errors} wrong (error rate {result.error_rate:.3f}). "
        "Lower AURC/e-AURC/AUGRC/FPR@95 and higher AUROC_f are better; 95 % paired bootstrap intervals. "
        "AURC is the discrete mean selective risk; AURC (fd-shifts) the trapezoid form fd-shifts reports "
        "(there multiplied by 1000).</p>"
        + img_tag(
            figure_to_data_uri(fig),
            f"Risk-coverage curves of {name}: error rate among the cases kept against the share of cases kept, "
            "one curve per confidence score",
        )
        + html_table(csf_table_rows(result))
        + _combined_note(result)
        + _review_html(review)
        + "<p><b>Most confident wrong predictions</b> (silent failures):</p>"
        + _gallery(result, pred)
    )
    summary = {
        "error_rate": result.error_rate,
        "review": review,
        "worst_ids": [c["id"] for c in result.worst_cases],
        "aurc": {k: v["aurc"]["value"] for k, v in result.csfs.items()},
        "combined": result.combined,
    }
    return body, summary


def build_sections(
    result: FailureResult,
    *,
    test: Predictions | None = None,
    shift_result: FailureResult | None = None,
    shift: Predictions | None = None,
    order: int = 50,
) -> list[Section]:
    """Failure-detection section(s): one for ``result`` (in distribution) and, when given, one for
    ``shift_result`` (e.g. another hospital). ``test``/``shift`` are the artifacts the results
    were computed on, used only for thumbnails of the worst cases."""
    sections = []
    for name, res, pred, key, extra in (
        ("In distribution", result, test, "failure", ""),
        ("Under shift", shift_result, shift, "failure-shift", _SHIFT_CAUTION),
    ):
        if res is None:
            continue
        body, summary = _block(name, res, pred)
        title = "Failure detection" if key == "failure" else "Failure detection under shift"
        sections.append(
            Section(
                title=title,
                body_html=extra + body,
                key=key,
                order=order + (0 if key == "failure" else 1),
                summary=summary,
            )
        )
    return sections
