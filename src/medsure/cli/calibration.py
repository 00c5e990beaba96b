"""``medsure calibration``: fit a calibrator on CAL, report test metrics before and after."""
from __future__ import annotations

import argparse

from medsure.artifact import load_predictions
from medsure.utils.io import write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibration", help="fit a calibrator on calibration predictions; ECE/MCE/ACE/Brier/NLL before and after",
        description="Fit a post-hoc calibrator on --cal (never on --test) and report test-set calibration "
                    "metrics before and after: ece, ece_equal_mass, mce, ace, classwise_ece, brier, nll.")
    p.add_argument("--cal", required=True, help="calibration prediction file (.npz, with labels)")
    p.add_argument("--test", required=True, help="test prediction file (.npz, with labels)")
    p.add_argument("--method", default="temperature", choices=("temperature", "vector", "isotonic", "histogram"),
                   help="calibrator (default temperature)")
    p.add_argument("--bins", type=int, default=15, help="bins for ECE/MCE/ACE (default 15)")
    p.add_argument("--out", required=True, help="RESULT.json to write")
    p.add_argument("--report", default=None, help="also write an HTML report with reliability diagrams")
    p.set_defaults(func=run_calibration)


def run_calibration(args: argparse.Namespace) -> int:
    from medsure.calibration.evaluate import calibrate_and_evaluate

    cal, test = load_predictions(args.cal), load_predictions(args.test)
    result = calibrate_and_evaluate(cal, test, method=args.method, n_bins=args.bins)
    out = result.to_dict()
    out.update({"cal": str(args.cal), "test": str(args.test)})
    write_json(args.out, out)
    if args.report:
        from medsure.calibration.report import build_sections
        from medsure.report.html import Report

        report = Report(title="medsure calibration")
        for section in build_sections(cal, test, method=args.method, n_bins=args.bins):
            report.add(section)
        report.write(args.report)
    b, a = result.before, result.after
    extra = f", T = {result.extra['temperature']:.3f}" if "temperature" in result.extra else ""
    print(f"{args.method}{extra}: ECE {b['ece']:.4f} -> {a['ece']:.4f}, NLL {b['nll']:.4f} -> {a['nll']:.4f}, "
          f"Brier {b['brier']:.4f} -> {a['brier']:.4f}")
    return 0
