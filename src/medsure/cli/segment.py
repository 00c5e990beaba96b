"""``medsure segment-eval`` and ``medsure conformal-mask``: segmentation uncertainty from artifacts."""
from __future__ import annotations

import argparse
import math

import numpy as np

from medsure.artifact import check_compatible, load_predictions
from medsure.errors import MedsureInputError
from medsure.utils.io import write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment-eval",
        help="Dice, HD95, pixel/boundary/segment calibration, UEO, Dice prediction, shift AUROC",
        description="Evaluate segmentation predictions (an .npz artifact with logits (N, K, H, W) or "
                    "(T, N, K, H, W) and masks (N, H, W)) and write the metrics as JSON.")
    p.add_argument("--pred", required=True, help="labelled segmentation prediction artifact (.npz)")
    p.add_argument("--shift", help="predictions of the same model on shifted images (.npz); adds shift_auroc")
    p.add_argument("--out", required=True, help="output JSON path")
    p.add_argument("--uncertainty", default="entropy",
                   choices=["entropy", "expected_entropy", "mutual_information", "one_minus_max_prob"],
                   help="per-pixel uncertainty map (default: predictive entropy)")
    p.add_argument("--reduce", default="foreground_mean", choices=["mean", "foreground_mean", "foreground_weighted"],
                   help="image-level aggregate of the uncertainty map (default: foreground_mean; "
                        "foreground_weighted weights pixels by 1 - p(background), so half-seen misses count)")
    p.add_argument("--bins", type=int, default=15, help="calibration bins (default 15)")
    p.add_argument("--band-width", type=int, default=2, help="boundary band half-width in pixels (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-fitted Dice predictor")
    p.set_defaults(func=run_segment_eval)

    q = subparsers.add_parser(
        "conformal-mask",
        help="conformal risk control of the per-image false-negative rate of segmentation masks",
        description="Pick per-label pixel thresholds on calibration predictions so the expected "
                    "per-image FNR on new images is at most alpha; report the test FNR.")
    q.add_argument("--cal", required=True, help="labelled calibration predictions (.npz)")
    q.add_argument("--test", required=True, help="labelled test predictions (.npz)")
    q.add_argument("--alpha", type=float, default=0.1, help="target expected FNR (default 0.1)")
    q.add_argument("--empty-gt", default="zero", choices=["zero", "exclude"],
                   help="images with an empty ground truth: FNR 0 (default) or excluded")
    q.add_argument("--out", required=True, help="output JSON path")
    q.set_defaults(func=run_conformal_mask)


def run_segment_eval(args: argparse.Namespace) -> int:
    from medsure.segmentation.evaluate import evaluate_segmentation

    if args.bins < 1:
        raise MedsureInputError(f"--bins {args.bins}: expected a positive integer")
    pred = load_predictions(args.pred)
    shift = load_predictions(args.shift) if args.shift else None
    result = evaluate_segmentation(pred, shift=shift, uncertainty=args.uncertainty, reduce=args.reduce,
                                   n_bins=args.bins, band_width=args.band_width, seed=args.seed)
    result["pred_file"] = str(args.pred)
    if args.shift:
        result["shift_file"] = str(args.shift)
    write_json(args.out, result)
    print(f"segment-eval: mean Dice {_fmt(result['dice_mean'])}, ECE {_fmt(result['ece'])}, "
          f"boundary ECE {_fmt(result['ece_boundary'])}, UEO {_fmt(result['ueo'])}"
          + (f", shift AUROC {_fmt(result['shift_auroc'])}" if "shift_auroc" in result else "")
          + f" -> {args.out}")
    return 0


def run_conformal_mask(args: argparse.Namespace) -> int:
    from medsure.segmentation.conformal_mask import ConformalMask
    from medsure.segmentation.evaluate import require_segmentation

    if not (0.0 < args.alpha < 1.0) or not math.isfinite(args.alpha):
        raise MedsureInputError(f"--alpha {args.alpha}: expected a number in (0, 1)")
    cal = load_predictions(args.cal)
    test = load_predictions(args.test)
    require_segmentation(cal, "--cal")
    require_segmentation(test, "--test")
    check_compatible(cal, test)
    if cal.n_samples < math.ceil(1.0 / args.alpha) - 1:
        raise MedsureInputError(
            f"--cal has {cal.n_samples} images; alpha={args.alpha} needs at least "
            f"{math.ceil(1.0 / args.alpha) - 1} (otherwise the guarantee forces the whole image into the mask)")
    cm = ConformalMask(alpha=args.alpha, empty_gt=args.empty_gt).calibrate(cal)
    names = [str(c) for c in cm.class_names_]
    needed = math.ceil(1.0 / args.alpha) - 1
    for name, n_used in zip(names, np.atleast_1d(cm.n_cal_)):
        if n_used < needed:  # with --empty-gt exclude only images showing the label count
            raise MedsureInputError(
                f"label {name!r}: {int(n_used)} calibration images contain it; alpha={args.alpha} needs at least "
                f"{needed} (otherwise the guarantee forces the whole image into the mask)")
    test_fnr = cm.fnr(test)
    if args.empty_gt == "exclude":
        present = np.stack([(test.masks == j).reshape(test.n_samples, -1).any(axis=1)
                            for j in range(1, test.n_classes)], axis=1)
        fnr_means = [float(test_fnr[present[:, j], j].mean()) if present[:, j].any() else None
                     for j in range(len(names))]
    else:
        fnr_means = [float(v) for v in test_fnr.mean(axis=0)]
    sets = cm.predict(test)
    binary = len(names) == 1
    result = {
        "alpha": args.alpha,
        "empty_gt": args.empty_gt,
        "labels": names,
        # binary tasks get plain numbers; multi-label tasks a value per foreground label
        "lambda": float(cm.lambda_[0]) if binary else dict(zip(names, map(float, cm.lambda_))),
        "fnr": fnr_means[0] if binary else dict(zip(names, fnr_means)),
        "n_cal": int(cm.n_cal_[0]) if binary else dict(zip(names, map(int, cm.n_cal_))),
        "n_test": test.n_samples,
        "mask_fraction": (float(sets.mean()) if binary
                          else dict(zip(names, map(float, sets.mean(axis=(0, 2, 3)))))),
        "cal_file": str(args.cal),
        "test_file": str(args.test),
    }
    write_json(args.out, result)
    print(f"conformal-mask: lambda {result['lambda']}, test FNR {result['fnr']} (alpha {args.alpha}) -> {args.out}")
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4f}"
