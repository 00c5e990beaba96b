"""Report sections for calibration: reliability diagrams before/after and a metric table."""
from __future__ import annotations

import html

from medsure.artifact import Predictions
from medsure.calibration.evaluate import calibrate_and_evaluate
from medsure.calibration.metrics import reliability_diagram
from medsure.report.html import Section, figure_to_data_uri, html_table, img_tag

__all__ = ["build_sections"]

_METRICS = ("ece", "ece_equal_mass", "mce", "ace", "classwise_ece", "brier", "nll", "accuracy")


def build_sections(cal: Predictions, test: Predictions, *, method: str = "temperature",
                   n_bins: int = 15, order: int = 40) -> list[Section]:
    """One section: test-set reliability diagrams before and after ``method`` (fitted on ``cal``)
    and a before/after table of every calibration metric."""
    from medsure.calibration.plots import plot_reliability

    result = calibrate_and_evaluate(cal, test, method=method, n_bins=n_bins)
    diagrams = {"before": reliability_diagram(result.probs_before, result.labels, n_bins=n_bins),
                f"after {method}": reliability_diagram(result.probs_after, result.labels, n_bins=n_bins)}
    fig = plot_reliability(diagrams, title=f"Test reliability ({test.n_samples} cases)")
    rows = [{"metric": m, "before": result.before[m], "after": result.after[m]} for m in _METRICS]
    note = ""
    if "temperature" in result.extra:
        note = f"<p>Fitted temperature T = {result.extra['temperature']:.3f} (T &gt; 1: the model was overconfident).</p>"
    body = (f"<p>Calibrator <b>{html.escape(method)}</b> fitted on {cal.n_samples} calibration cases only; "
            f"metrics on {test.n_samples} test cases, {n_bins} bins. Lower is better except accuracy.</p>"
            + note + img_tag(figure_to_data_uri(fig), "reliability diagrams") + html_table(rows))
    return [Section(title="Calibration", body_html=body, key="calibration", order=order,
                    summary={"method": method, "before": result.before, "after": result.after, **result.extra})]
