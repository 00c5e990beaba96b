"""``medsure calibration``: fit a calibrator on CAL, report test metrics before and after."""

from __future__ import annotations

import argparse
import sys

from medsure.artifact import load_predictions
from medsure.calibration.calibrators import CALIBRATORS
from medsure.cli._outputs import OutputPlan
from medsure.utils.io import write_result_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibration",
        help="fit a calibrator on calibration predictions; ECE/MCE/ACE/Brier/NLL before and after",
        description="Fit a post-hoc calibrator on --cal (never on --test) and report test-set calibration "
        "metrics before and after: ece, ece_equal_mass, mce, ace, classwise_ece, brier, nll. "
        "Refuses a calibration set below the calibrator's minimum size, warns when the fitted "
        "temperature sits at its search bound, and flags a calibrator that worsens ECE or NLL on "
        "a held-out third of the calibration data.",
    )
    p.add_argument("--cal", required=True, help="calibration prediction file (.npz, with labels)")
    p.add_argument("--test", required=True, help="test prediction file (.npz, with labels)")
    p.add_argument(
        "--method", default="temperature", choices=sorted(CALIBRATORS), help="calibrator (default temperature)"
    )
    p.add_argument("--bins", type=int, default=15, help="bins for ECE/MCE/ACE (default 15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split of the calibration data")
    p.add_argument("--out", required=True, help="RESULT.json to write")
    p.add_argument("--report", default=None, help="also write an HTML report with reliability diagrams")
    p.set_defaults(func=run_calibration)


def run_calibration(args: argparse.Namespace) -> int:
    from medsure.calibration.evaluate import evaluate_calibration

    plan = OutputPlan()
    out_path = plan.file("--out", args.out)
    report_path = plan.file("--report", args.report)
    cal, test = load_predictions(args.cal), load_predictions(args.test)
    for option, path, data, needs in (
        ("--cal", args.cal, cal, "the calibrator is fitted on calibration labels"),
        ("--test", args.test, test, "ECE, NLL, Brier and the reliability diagrams before and after need test labels"),
    ):
        if data.task == "classification" and data.labels is None:
            from medsure.validation import input_error

            raise input_error(
                f"{option} '{path}'",
                "unlabelled predictions (no 'labels' key)",
                "labelled predictions",
                needs,
                raw=True,
            )
    result = evaluate_calibration(cal, test, method=args.method, n_bins=args.bins, seed=args.seed)
    out = result.to_dict()
    out.update({"cal": str(args.cal), "test": str(args.test)})
    plan.add(out_path, lambda path: write_result_json(path, out))
    if report_path is not None:
        from medsure.calibration.report import build_sections
        from medsure.report.html import Report

        report = Report(title="medsure calibration")
        for section in build_sections(result):
            report.add(section)
        plan.add(report_path, report.write)
    plan.write_all()
    b, a = result.before, result.after
    extra = f", T = {result.parameters['temperature']:.3f}" if "temperature" in result.parameters else ""
    print(
        f"{args.method}{extra}: ECE {b['ece']:.4f} -> {a['ece']:.4f}, NLL {b['nll']:.4f} -> {a['nll']:.4f}, "
        f"Brier {b['brier']:.4f} -> {a['brier']:.4f}"
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
