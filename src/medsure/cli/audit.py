"""``medsure audit``: did the policy's guarantees hold, now that experts have labelled cases?"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np

from medsure.cli._outputs import OutputPlan
from medsure.validation import input_error


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit",
        help="audit a triage against expert decisions: realised risk and coverage vs the promised bounds",
        description="Compare the realised error rate of the auto-accepted cases (model vs expert label) with the "
        "policy's bound, and the realised coverage of the prediction sets with 1 - alpha, with exact "
        "Clopper-Pearson intervals and a verdict. Experts must also label a random sample of auto-accepted "
        "cases (queue filter 'auto-accepted') for the risk to be audited.",
    )
    p.add_argument("--policy", required=True, help="policy.json the worklist was triaged with")
    p.add_argument("--worklist", required=True, help="worklist folder written by `medsure triage`")
    p.add_argument(
        "--decisions",
        required=True,
        help="decisions.csv (`medsure review export` or GET /export.csv) or the review database itself",
    )
    p.add_argument("--level", type=float, default=0.95, help="level of the intervals (default 0.95)")
    p.add_argument("--out", required=True, help="audit.json to write")
    p.add_argument("--report", default=None, help="also write an HTML report section")
    p.set_defaults(func=run_audit)


def read_decisions(path: str) -> list[dict[str, Any]]:
    """Decision rows (case_id, label, ...) from an export CSV or a review database, oldest first."""
    from medsure.review.db import ReviewDB, uncell

    p = Path(path)
    if not p.is_file():
        raise input_error("--decisions", path, "an existing decisions.csv or review database")
    with open(p, "rb") as handle:
        head = handle.read(16)
    if head == b"SQLite format 3\x00":
        return ReviewDB(p, option="--decisions").all_decisions()
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise input_error(
            "--decisions", f"'{p}', neither UTF-8 text nor SQLite", "a decisions CSV or a review database", raw=True
        ) from None
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not {"case_id", "label"} <= set(reader.fieldnames):
        raise input_error(
            "--decisions",
            f"'{p}' with columns {reader.fieldnames}",
            "a CSV with at least the columns case_id and label (as `medsure review export` writes)",
            raw=True,
        )
    return [{**row, "case_id": uncell(row["case_id"]), "label": uncell(row["label"])} for row in reader]


def run_audit(args: argparse.Namespace) -> int:
    from medsure.handoff.audit import evaluate_audit
    from medsure.handoff.policy import load_policy
    from medsure.review.worklist import UNSURE, load_worklist
    from medsure.utils.io import write_result_json

    plan = OutputPlan()
    out = plan.file("--out", args.out)
    report_path = plan.file("--report", args.report)
    policy = load_policy(args.policy)
    worklist = load_worklist(args.worklist)
    recorded = worklist.document.get("policy", {}).get("record", {})
    if recorded.get("created") != policy.created_ or recorded.get("cal_sha256") != policy.cal_sha256_:
        raise input_error(
            "--policy",
            f"'{args.policy}' (created {policy.created_})",
            f"the policy the worklist was triaged with (created {recorded.get('created')})",
            raw=True,
        )
    rows = read_decisions(args.decisions)
    cases = worklist.cases
    index = worklist.case_index()
    choices = worklist.choices
    unknown = sorted({r["case_id"] for r in rows} - set(index))
    if unknown:
        raise input_error(
            "--decisions",
            f"{len(unknown)} case ids not in the worklist (first: {unknown[:3]})",
            "decisions about the cases of this worklist",
            raw=True,
        )
    bad = sorted({r["label"] for r in rows} - set(choices))
    if bad:
        raise input_error("--decisions labels", bad, f"the worklist's choices {choices}")
    n = len(cases)
    expert = np.full(n, -1, dtype=np.int64)
    classification = worklist.task == "classification"
    names = worklist.choices[:-1]
    for r in rows:  # oldest first: the latest decision of a case wins
        expert[index[r["case_id"]]] = -2 if r["label"] == UNSURE else names.index(r["label"])
    auto = np.array([c["decision"] == "auto" for c in cases], dtype=bool)
    if classification:
        predicted = np.array([names.index(c["predicted"]) for c in cases], dtype=np.int64)
        sets = np.zeros((n, len(names)), dtype=bool)
        for j, c in enumerate(cases):
            sets[j, [names.index(x) for x in c["prediction_set"]]] = True
        review = policy.review_
        promised = None if review is None or review["threshold"] is None else review["target_risk"]
        delta = None if review is None else review["delta"]
        alpha = None if policy.conformal_ is None else policy.conformal_["alpha"]
    else:
        # segmentation: the model's mask counts as an error when the expert rejects it; no bound is promised
        predicted = np.zeros(n, dtype=np.int64)  # "accept"
        sets, promised, delta, alpha = None, None, None, None
    result = evaluate_audit(
        auto, predicted, sets, expert, promised_risk=promised, delta=delta, alpha=alpha, level=args.level
    )
    if report_path is not None:
        from medsure.handoff.report import audit_section
        from medsure.report.html import Report

        report = Report(title="medsure audit")
        report.add(audit_section(result, guarantee=worklist.document.get("guarantee")))
        plan.add(report_path, report.write)
    payload = {**result.to_dict(), "worklist": str(args.worklist), "policy": str(args.policy)}
    plan.add(out, lambda path: write_result_json(path, payload))
    plan.write_all()
    risk = result.to_dict()["risk"]
    print(
        f"wrote {out}: risk {risk['verdict']} ({risk['n_errors']}/{risk['n_auto_labelled']} errors among labelled "
        f"auto-accepted cases, promised <= {risk['promised']}); coverage {result.coverage_verdict}"
    )
    return 0
