"""Report sections for failure detection: CSF table, risk-coverage curves, review threshold
with a guarantee, and the most confident wrong cases (silent failures) with thumbnails."""
from __future__ import annotations

import html
from typing import Any

import numpy as np

from medsure.artifact import Predictions
from medsure.failure.evaluate import COMBINED, compute_csfs, evaluate_failure, prediction_errors, score_csfs
from medsure.failure.review import SelectiveRiskThreshold
from medsure.report.html import Section, figure_to_data_uri, html_table, image_to_data_uri, img_tag

__all__ = ["build_sections", "most_confident_errors", "csf_table_rows"]


def most_confident_errors(pred: Predictions, confidence: np.ndarray, n: int = 8) -> np.ndarray:
    """Indices of the ``n`` wrong predictions with the highest confidence, most confident first."""
    errors = prediction_errors(pred).astype(bool)
    wrong = np.flatnonzero(errors)
    return wrong[np.argsort(-confidence[wrong], kind="stable")[:n]]


def _fmt_ci(metric: dict[str, Any]) -> str:
    if metric["value"] is None:
        return "undefined"
    lo, hi = metric["ci"] if metric["ci"] else (np.nan, np.nan)
    return f"{metric['value']:.4f} [{lo:.4f}, {hi:.4f}]"


def csf_table_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """Rows sorted by AURC: name, AURC, e-AURC, AUGRC, AUROC_f, FPR@95 with 95 % intervals."""
    ranked = sorted(result["csfs"].items(), key=lambda kv: kv[1]["aurc"]["value"])
    return [{"CSF": name, "AURC": _fmt_ci(m["aurc"]), "e-AURC": _fmt_ci(m["eaurc"]),
             "AUGRC": _fmt_ci(m["augrc"]), "AUROC_f": _fmt_ci(m["auroc_f"]), "FPR@95TPR": _fmt_ci(m["fpr95"])}
            for name, m in ranked]


def _gallery(pred: Predictions, index: np.ndarray, confidence: np.ndarray) -> str:
    if index.size == 0:
        return "<p>No wrong predictions.</p>"
    probs = pred.probabilities()
    names = [str(c) for c in pred.class_names]
    figures = []
    for i in index:
        caption = (f"{html.escape(str(pred.ids[i]))}<br>predicted {html.escape(names[int(probs[i].argmax())])} "
                   f"({probs[i].max():.2f}), truth {html.escape(names[int(pred.labels[i])])}")
        thumb = (img_tag(image_to_data_uri(pred.thumbnails[i]), str(pred.ids[i]), width=96)
                 if pred.thumbnails is not None else "")
        figures.append(f"<figure>{thumb}<figcaption>{caption}</figcaption></figure>")
    return "<div class='gallery'>" + "".join(figures) + "</div>"


def _split_block(name: str, pred: Predictions, csfs: dict[str, np.ndarray], result: dict[str, Any],
                 review: SelectiveRiskThreshold, review_csf: str, n_worst: int) -> tuple[str, dict[str, Any]]:
    from medsure.failure.plots import plot_risk_coverage

    errors = prediction_errors(pred)
    review_eval = review.evaluate(csfs[review_csf], errors)
    shown = {k: csfs[k] for k in ("msr", "doctor", "energy", COMBINED) if k in csfs}
    fig = plot_risk_coverage(shown, errors, title=f"{name}: {pred.n_samples} cases, error rate {errors.mean():.3f}",
                             review_coverage=review_eval["coverage"], target_risk=review.target_risk)
    worst = most_confident_errors(pred, csfs["msr"], n_worst)
    body = (f"<h3>{html.escape(name)}</h3>"
            f"<p>{pred.n_samples} cases, {int(errors.sum())} wrong (error rate {errors.mean():.3f}). "
            "Lower AURC/e-AURC/AUGRC/FPR@95 and higher AUROC_f are better; 95 % paired bootstrap intervals.</p>"
            + img_tag(figure_to_data_uri(fig), f"risk-coverage {name}") + html_table(csf_table_rows(result))
            + f"<p><b>Review threshold</b> ({html.escape(review_csf)}; fitted on calibration data for selective "
              f"risk &le; {review.target_risk} with probability &ge; {1 - review.delta:.2f}): "
              f"{review_eval['review_share']:.1%} of these cases go to an expert; the error among the rest is "
              f"{review_eval['selective_risk']:.3f} ({review_eval['n_errors_accepted']} of {review_eval['n_accepted']}).</p>"
            + _uncertifiable_note(review)
            + "<p><b>Most confident wrong predictions</b> (silent failures):</p>" + _gallery(pred, worst, csfs["msr"]))
    return body, {"review": review_eval, "worst_ids": [str(pred.ids[i]) for i in worst]}


def build_sections(cal: Predictions, test: Predictions, *, shift: Predictions | None = None,
                   n_boot: int = 500, seed: int = 0, target_risk: float = 0.1, delta: float = 0.1,
                   review_csf: str = "msr", n_worst: int = 8, order: int = 50) -> list[Section]:
    """Failure-detection section(s): one for ``test`` (in distribution) and, when given, one
    for ``shift`` (e.g. another hospital). Everything fitted (combined CSF, review threshold)
    uses ``cal`` only. Under shift the review guarantee does not apply: the section says so."""
    cal_conf = compute_csfs(cal)[review_csf]
    review = SelectiveRiskThreshold(target_risk, delta).fit(cal_conf, prediction_errors(cal))
    sections = []
    for name, pred, key, extra in (("In distribution", test, "failure", ""),
                                   ("Under shift", shift, "failure-shift",
                                    "<p><b>Caution:</b> the review guarantee assumes test cases exchangeable with the "
                                    "calibration cases; under a shift it may not hold. Shown for comparison.</p>")):
        if pred is None:
            continue
        scores = score_csfs(cal, pred)
        result = evaluate_failure(cal, pred, n_boot=n_boot, seed=seed, scores=scores)
        body, summary = _split_block(name, pred, scores[0], result, review, review_csf, n_worst)
        summary.update({"error_rate": result["error_rate"],
                        "aurc": {k: v["aurc"]["value"] for k, v in result["csfs"].items()}})
        title = "Failure detection" if key == "failure" else "Failure detection under shift"
        sections.append(Section(title=title, body_html=extra + body, key=key,
                                order=order + (0 if key == "failure" else 1), summary=summary))
    return sections


def _uncertifiable_note(review: SelectiveRiskThreshold) -> str:
    """Why everything goes to review when no threshold could be certified."""
    if np.isfinite(review.threshold_) or not review.tested_:
        return ""
    best = min(review.tested_, key=lambda t: t["bound"])
    return (f"<p><b>No threshold could be certified</b> with {review.n_cal_} calibration cases: the lowest "
            f"bound found was {best['bound']:.3f} (accepting {best['coverage']:.1%} of calibration cases, "
            f"empirical error {best['risk']:.3f}), above the target {review.target_risk}. More calibration "
            "data, a looser target or a better model is needed before any case can skip review.</p>")
