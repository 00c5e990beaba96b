"""The audit's report section: renders an :class:`~medsure.handoff.audit.AuditResults`, computes nothing."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from medsure.report.html import Section, html_table

if TYPE_CHECKING:
    from medsure.handoff.audit import AuditResults

__all__ = ["audit_section"]


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _interval(value: Any) -> str:
    return "–" if value is None else f"[{value[0]:.4f}, {value[1]:.4f}]"


def audit_section(result: AuditResults, *, guarantee: dict[str, Any] | None = None) -> Section:
    """The audit as a report section: promised vs realised risk and coverage, verdicts, notes."""
    d = result.to_dict()
    risk, cov = d["risk"], d["coverage"]
    level = f"{100 * d['interval_level']:.0f}%"
    rows = [
        [
            "error rate of auto-accepted cases",
            f"<= {_num(risk['promised'])}",
            f"{risk['n_errors']} / {risk['n_auto_labelled']}",
            _num(risk["realised"]),
            _interval(risk["interval"]),
            risk["verdict"],
        ],
        [
            "prediction-set coverage (labelled cases)",
            f">= {_num(cov['promised'])}",
            f"{cov['n_covered']} / {cov['n_labelled']}",
            _num(cov["realised"]),
            _interval(cov["interval"]),
            cov["verdict"],
        ],
    ]
    table = html_table(rows, ["guarantee", "promised", "count", "realised", f"{level} interval", "verdict"])
    held = {True: "held", False: "violated", None: "not assessable (no data)"}[d["held"]]
    body = (
        f"<p>{d['n_cases']} triaged cases, {d['n_auto']} auto-accepted; {d['n_labelled']} with an expert label "
        f"({d['n_unsure']} marked unsure, left out). Overall: <b>{html.escape(held)}</b>. Intervals are exact "
        f"Clopper-Pearson; verdicts use a one-sided binomial test at level {d['test_level']}.</p>{table}"
    )
    if guarantee:
        body += "<p>What the policy promised:</p><ul>" + "".join(
            f"<li>{html.escape(s)}</li>" for s in guarantee.get("statements", [])
        )
        body += (
            "</ul><p>Assumptions:</p><ul>"
            + "".join(f"<li>{html.escape(s)}</li>" for s in guarantee.get("assumptions", []))
            + "</ul>"
        )
    if d["notes"]:
        body += "<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in d["notes"]) + "</ul>"
    return Section("Audit of the hand-off guarantee", body, key="audit", order=90, summary=d)
