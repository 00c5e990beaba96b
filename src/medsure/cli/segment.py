"""``medsure segment-eval`` and ``medsure conformal-mask``: segmentation uncertainty from artifacts."""

from __future__ import annotations

import argparse
import math

from medsure.artifact import load_predictions
from medsure.cli._outputs import OutputPlan
from medsure.segmentation.uncertainty import DEFAULT_REDUCTION, REDUCTIONS, UNCERTAINTY_KINDS
from medsure.utils.io import write_result_json
from medsure.validation import check_alpha, check_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment-eval",
        help="Dice, HD95, pixel/boundary/segment calibration, UEO, Dice prediction, shift AUROC",
        description="Evaluate segmentation predictions (an .npz artifact with logits (N, K, H, W) or "
        "(T, N, K, H, W) and masks (N, H, W)) and write the metrics as JSON.",
    )
    p.add_argument("--pred", required=True, help="labelled segmentation prediction artifact (.npz)")
    p.add_argument(
        "--shift",
        help="predictions of the same model on shifted images (.npz); adds the shift "
        "AUROC of every image-level reduction",
    )
    p.add_argument(
        "--cal",
        help="labelled predictions of the same model on other images (.npz); adds a Dice "
        "predictor fitted there and scored on --pred",
    )
    p.add_argument("--out", required=True, help="output JSON path")
    p.add_argument("--report", default=None, help="also write an HTML report (summary, overlays, calibration)")
    p.add_argument(
        "--uncertainty",
        default="entropy",
        choices=list(UNCERTAINTY_KINDS),
        help="per-pixel uncertainty map (default: predictive entropy)",
    )
    p.add_argument(
        "--reduce",
        default=DEFAULT_REDUCTION,
        choices=list(REDUCTIONS),
        help=f"image-level reduction of the uncertainty map for Dice prediction and shift_auroc "
        f"(default: {DEFAULT_REDUCTION}, chosen in benchmarks/segmentation_shift.md); --shift "
        "reports every reduction's AUROC as well",
    )
    p.add_argument("--bins", type=int, default=15, help="calibration bins (default 15)")
    p.add_argument("--band-width", type=int, default=2, help="boundary band half-width in pixels (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-fitted Dice predictor")
    p.set_defaults(func=run_segment_eval)

    q = subparsers.add_parser(
        "conformal-mask",
        help="conformal risk control of the per-image false-negative rate of segmentation masks",
        description="Pick per-label pixel thresholds on calibration predictions so the expected "
        "per-image FNR on new images is at most alpha; report the test FNR.",
    )
    q.add_argument("--cal", required=True, help="labelled calibration predictions (.npz)")
    q.add_argument("--test", required=True, help="labelled test predictions (.npz)")
    q.add_argument("--alpha", type=float, default=0.1, help="target expected FNR (default 0.1)")
    q.add_argument(
        "--empty-gt",
        default="zero",
        choices=["zero", "exclude"],
        help="images with an empty ground truth: FNR 0 (default) or excluded",
    )
    q.add_argument("--out", required=True, help="output JSON path")
    q.add_argument("--report", default=None, help="also write an HTML report (λ̂, test FNR, FNR curves)")
    q.set_defaults(func=run_conformal_mask)


def run_segment_eval(args: argparse.Namespace) -> int:
    from medsure.segmentation.evaluate import evaluate_segmentation

    plan = OutputPlan()
    out_path = plan.file("--out", args.out)
    report_path = plan.file("--report", args.report)
    check_int("--bins", args.bins, low=1)
    check_int("--band-width", args.band_width, low=0)
    # task="segmentation": a joint (uml) file gives its segmentation part
    pred = load_predictions(args.pred, task="segmentation")
    shift = load_predictions(args.shift, task="segmentation") if args.shift else None
    cal = load_predictions(args.cal, task="segmentation") if args.cal else None
    _require_masks(
        "--pred", args.pred, pred, "segment-eval", "Dice, HD95, calibration, UEO and Dice prediction need masks"
    )
    if cal is not None:
        _require_masks("--cal", args.cal, cal, "segment-eval", "the Dice predictor is fitted on labelled --cal")
    result = evaluate_segmentation(
        pred,
        cal=cal,
        shift=shift,
        uncertainty=args.uncertainty,
        reduce=args.reduce,
        n_bins=args.bins,
        band_width=args.band_width,
        seed=args.seed,
        # errors name the option and file the user gave, e.g. "--pred 'x.npz': got a classification artifact"
        input_names={
            key: f"--{key} '{path}'"
            for key, path in (("pred", args.pred), ("cal", args.cal), ("shift", args.shift))
            if path
        },
    )
    out = result.to_dict()
    out["pred_file"] = str(args.pred)
    for option, value in (("shift_file", args.shift), ("cal_file", args.cal)):
        if value:
            out[option] = str(value)
    plan.add(out_path, lambda path: write_result_json(path, out))
    if report_path is not None:
        plan.add(report_path, _report_writer("medsure segment-eval", segmentation=result))
    plan.write_all()
    print(
        f"segment-eval: mean Dice {_fmt(result.dice_mean)}, ECE {_fmt(result.ece)}, "
        f"boundary ECE {_fmt(result.ece_boundary)}, UEO {_fmt(result.ueo)}"
        + (
            f", shift AUROC {_fmt(result.shift_auroc)} ({result.image_reduce})"
            if result.shift_auroc is not None
            else ""
        )
        + f" -> {args.out}"
    )
    if result.shift_auroc_by_reduction is not None:
        print("shift AUROC by image-level reduction:")
        for name, auc in result.shift_auroc_by_reduction.items():
            print(f"  {name:<20} {_fmt(auc)}" + ("  (used)" if name == result.image_reduce else ""))
    return 0


def run_conformal_mask(args: argparse.Namespace) -> int:
    from medsure.segmentation.conformal_mask import evaluate_conformal_mask

    plan = OutputPlan()
    out_path = plan.file("--out", args.out)
    report_path = plan.file("--report", args.report)
    check_alpha(args.alpha, what="--alpha")
    cal = load_predictions(args.cal, task="segmentation")  # a joint file: its segmentation part
    test = load_predictions(args.test, task="segmentation")
    for option, path, data in (("--cal", args.cal, cal), ("--test", args.test, test)):
        _require_masks(
            option, path, data, "conformal-mask", "λ̂ is fitted on cal masks and the test FNR needs test masks"
        )
    result = evaluate_conformal_mask(cal, test, alpha=args.alpha, empty_gt=args.empty_gt)
    out = {**result.to_dict(), "cal_file": str(args.cal), "test_file": str(args.test)}
    plan.add(out_path, lambda path: write_result_json(path, out))
    if report_path is not None:
        plan.add(
            report_path,
            _report_writer(
                "medsure conformal-mask",
                conformal=result,
                test_thumbnails=test.thumbnails,
                test_ids=test.ids,
                test_truth=test.masks,
            ),
        )
    plan.write_all()
    print(f"conformal-mask: lambda {out['lambda']}, test FNR {out['fnr']} (alpha {args.alpha}) -> {args.out}")
    return 0


def _require_masks(option: str, path: str, pred, command: str, needs: str) -> None:
    """One line for an unlabelled segmentation file: which parts of ``command`` need masks."""
    from medsure.validation import input_error

    if pred.task == "segmentation" and pred.masks is None:
        raise input_error(
            f"{option} '{path}'",
            "an artifact without 'masks' (unlabelled predictions)",
            f"labelled predictions for {command}: {needs}",
            "predict a labelled split (medsure predict --split cal/test) for this; unlabelled images are "
            "for viewing predictions and uncertainty only",
            raw=True,
        )


def _report_writer(title: str, **results):
    """Render the report sections now (results are computed) and return the writer for the plan."""
    from medsure.report.html import Report
    from medsure.segmentation.report import build_sections

    report = Report(title=title)
    for section in build_sections(**results):
        report.add(section)
    return report.write


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4f}"
