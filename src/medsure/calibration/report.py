"""Report section for calibration: renders a :class:`~medsure.calibration.evaluate.CalibrationResult`
(reliability diagrams before/after, a metric table, warnings). It computes nothing."""

from __future__ import annotations

import html

from medsure.calibration.evaluate import CalibrationResult
from medsure.report.html import Section, figure_to_data_uri, html_table, img_tag

__all__ = ["build_sections"]

_METRICS = ("ece", "ece_equal_mass", "mce", "ace", "classwise_ece", "brier", "nll", "accuracy")


def build_sections(result: CalibrationResult, *, order: int = 40) -> list[Section]:
    """One section: the test reliability diagrams before and after, the before/after table of
    every calibration metric, the held-out check and any warning of ``result``."""
    from medsure.calibration.plots import plot_reliability

    method = result.method
    diagrams = {"before": result.reliability_before, f"after {method}": result.reliability_after}
    fig = plot_reliability(diagrams, title=f"Test reliability ({result.n_test} cases)")
    rows = [{"metric": m, "before": result.before[m], "after": result.after[m]} for m in _METRICS]
    note = ""
    if "temperature" in result.parameters:
        note = (
            f"<p>Fitted temperature T = {result.parameters['temperature']:.3f} "
            "(T &gt; 1: the model was overconfident).</p>"
        )
    held = result.heldout
    if "skipped" in held:
        held_html = f"<p>Held-out check skipped: {html.escape(held['skipped'])}.</p>"
    else:
        held_html = (
            f"<p>Held-out check (fitted on {held['n_fit']} calibration cases, measured on the other "
            f"{held['n_heldout']}): "
            + ", ".join(f"{m.upper()} {held['before'][m]:.4f} &rarr; {held['after'][m]:.4f}" for m in held["before"])
            + (" &mdash; <b>worsened</b>." if result.worsened_on_heldout else ".")
            + "</p>"
        )
    warnings = "".join(f"<p><b>Warning:</b> {html.escape(w)}</p>" for w in result.warnings)
    body = (
        warnings + f"<p>Calibrator <b>{html.escape(method)}</b> fitted on {result.n_cal} calibration cases "
        f"only; metrics on {result.n_test} test cases, {result.n_bins} bins. Lower is better except "
        "accuracy.</p>" + note + held_html + img_tag(figure_to_data_uri(fig), "reliability diagrams") + html_table(rows)
    )
    summary = {k: v for k, v in result.to_dict().items() if k != "reliability"}
    return [Section(title="Calibration", body_html=body, key="calibration", order=order, summary=summary)]
