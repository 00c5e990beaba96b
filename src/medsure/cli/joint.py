"""``medsure joint``: the joint view of a joint (uml) model's prediction files."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "joint",
        help="class sets, image and pixel uncertainty of a joint (uml) model, with a joint view of test cases",
        description="Read joint prediction files (medsure predict on a uml run) and report the conformal "
        "class sets on the expected probabilities, how the image uncertainty u = K/S flags errors, per-image "
        "Dice and pixel u, and a gallery of test cases (image, mask, pixel u, class set, image u).",
    )
    p.add_argument("--cal", required=True, help="joint calibration prediction file (.npz, task joint, labelled)")
    p.add_argument("--test", required=True, help="joint test prediction file (.npz, task joint, labels and masks)")
    p.add_argument("--alpha", type=float, default=0.1, help="miscoverage of the class sets (default 0.1)")
    p.add_argument("--method", default="lac", choices=("lac", "aps", "raps", "topk", "saps"))
    p.add_argument("--examples", type=int, default=6, help="test cases in the joint view (default 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="RESULT.json to write")
    p.add_argument("--report", default=None, help="also write an HTML report with the joint view")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsure.artifact import load_joint_predictions
    from medsure.cli._outputs import OutputPlan
    from medsure.evidential.analysis import evaluate_joint
    from medsure.utils.io import write_result_json
    from medsure.validation import check_alpha, check_int

    plan = OutputPlan()
    out_path = plan.file("--out", args.out)
    report_path = plan.file("--report", args.report)
    check_alpha(args.alpha, what="--alpha")
    check_int("--examples", args.examples, low=0)
    cal, test = load_joint_predictions(args.cal), load_joint_predictions(args.test)
    result = evaluate_joint(cal, test, alpha=args.alpha, method=args.method, n_examples=args.examples, seed=args.seed)
    out = {**result.to_dict(), "cal_file": str(args.cal), "test_file": str(args.test)}
    plan.add(out_path, lambda path: write_result_json(path, out))
    if report_path is not None:
        from medsure.evidential.report import build_sections
        from medsure.report.html import Report

        report = Report(title="medsure joint")
        for section in build_sections(result):
            report.add(section)
        plan.add(report_path, report.write)
    plan.write_all()
    print(
        f"joint: accuracy {result.accuracy:.4f}, coverage {result.coverage:.4f} (target {1 - args.alpha:.2f}), "
        f"mean set size {result.mean_set_size:.3f}, mean image u {result.mean_class_u:.3f} -> {args.out}"
    )
    return 0
