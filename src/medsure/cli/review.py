"""``medsure review export``: the decisions of a review database as CSV (every decision, history kept)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medsure.cli._outputs import OutputPlan
from medsure.validation import input_error


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("review", help="review database: export the expert decisions")
    actions = p.add_subparsers(dest="review_action", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        help="write every decision of --db to --out (CSV)",
        description="One row per decision, oldest first: decision_id, case_id, label, note, reviewer, "
        "decided_at (UTC), supersedes (the decision it replaced) and current (1 for each case's latest).",
    )
    export.add_argument("--db", required=True, help="review database written by `medsure serve`")
    export.add_argument("--out", required=True, help="decisions.csv to write")
    export.set_defaults(func=run_review_export)


def run_review_export(args: argparse.Namespace) -> int:
    from medsure.review.db import ReviewDB, decisions_csv
    from medsure.utils.io import atomic_write_text

    plan = OutputPlan()
    out = plan.file("--out", args.out)
    if not Path(args.db).is_file():
        raise input_error("--db", args.db, "an existing review database written by `medsure serve`")
    rows = ReviewDB(args.db).all_decisions()
    text = decisions_csv(rows)
    plan.add(out, lambda path: atomic_write_text(path, text))
    plan.write_all()
    print(f"wrote {out}: {len(rows)} decisions of {len({r['case_id'] for r in rows})} cases")
    return 0
