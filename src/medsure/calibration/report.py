"""Report section for calibration: renders a :class:`~medsure.calibration.evaluate.CalibrationResult`
(reliability diagrams before/after, a metric table, warnings). It computes nothing."""

from __future__ import annotations

import html

from medsure.calibration.evaluate import CalibrationResult
from medsure.report.html import Section, figure_to_data_uri, html_table, img_tag

__all__ = ["build_sections"]

_METRICS = ("ece", "ece_equal_mass", "mce", "ace", "classwise_ece", "brier", "nll", "accuracy")


def _temperature_meaning(result: CalibrationResult) -> str:
    """What the fitted temperature says about the model, read from its value (T divides the logits)."""
    t = float(result.parameters["temperature"])
    if abs(t - 1.0) < 0.02:
        return "T &asymp; 1: the model's confidence already matched its accuracy on the calibration cases"
    if t > 1.0:
        return "T &gt; 1: the model was overconfident; dividing the logits by T softens its probabilities"
    return "T &lt; 1: the model was underconfident; dividing the logits by T sharpens its probabilities"


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
        note = f"<p>Fitted temperature T = {result.parameters['temperature']:.3f} ({_temperature_meaning(result)}).</p>"
    worse = [m.upper() for m in ("ece", "nll") if result.after[m] > result.before[m]]
    if worse:
        note += (
            f"<p class='flag-bad'>WORSENED: {html.escape(method)} makes the test "
            + " and ".join(
                f"{m} worse ({result.before[m.lower()]:.4f} &rarr; {result.after[m.lower()]:.4f})" for m in worse
            )
            + ". Do not use this calibrator on this model; keep the uncalibrated probabilities or try "
            "another method.</p>"
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
        "accuracy.</p>"
        + note
        + held_html
        + img_tag(
            figure_to_data_uri(fig),
            f"Test reliability diagrams before and after {method}: accuracy against confidence per bin, "
            "with the diagonal of perfect calibration",
        )
        + html_table(rows)
    )
    summary = {k: v for k, v in result.to_dict().items() if k != "reliability"}
    return [Section(title="Calibration", body_html=body, key="calibration", order=order, summary=summary)]
