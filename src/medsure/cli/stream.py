"""``medsure stream``: analyses over shard folders (or files) one shard in memory at a time.

The streaming drivers of :mod:`medsure.conformal.streaming`, :mod:`medsure.calibration.streaming`,
:mod:`medsure.failure.streaming` and :mod:`medsure.segmentation.streaming` behind one command,
for prediction sets too large to load whole (see docs/scale.md). Writes RESULT.json.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from medsure.cli._outputs import OutputPlan
from medsure.utils.io import write_result_json
from medsure.validation import check_alpha, check_int, input_error

ANALYSES = ("conformal", "calibration", "failure", "segmentation", "conformal-mask")
_NEEDS_CAL = ("conformal", "conformal-mask")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stream",
        help="conformal sets, calibration, failure or segmentation metrics over shard folders, streamed",
        description="Reads --cal/--test (shard folders written by medsure predict --shard-size, or files) one "
        "shard at a time and keeps only 1-D values per case; results equal the in-memory commands "
        "(docs/scale.md). Writes RESULT.json.",
    )
    p.add_argument("analysis", choices=ANALYSES, help="what to compute")
    p.add_argument("--cal", default=None, help="calibration shard folder or file (conformal, conformal-mask)")
    p.add_argument("--test", required=True, help="test shard folder or file (labelled)")
    p.add_argument("--method", default="aps", help="conformal score (default aps); RAPS/SAPS need --param")
    p.add_argument(
        "--param", action="append", default=None, metavar="NAME=VALUE", help="score parameter, e.g. lam=0.01"
    )
    p.add_argument("--alpha", type=float, default=0.1, help="miscoverage (conformal) or target FNR (conformal-mask)")
    p.add_argument("--class-conditional", action="store_true", help="conformal: one threshold per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomization and bootstrap")
    p.add_argument("--bins", type=int, default=15, help="bins of the calibration metrics")
    p.add_argument("--n-boot", type=int, default=200, help="failure: bootstrap resamples of the intervals")
    p.add_argument("--out", required=True, help="RESULT.json to write")
    p.set_defaults(func=run)


def _params(items: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name or number is None:
            raise input_error("--param", item, "NAME=VALUE with a number, e.g. lam=0.01 or k_reg=2")
        out[name] = int(number) if number.is_integer() and "." not in value else number
    return out


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    """Arrays become lists (per-case arrays are left out: RESULT.json is a summary)."""
    return {k: (v.tolist() if v.size <= 1000 else None) if isinstance(v, np.ndarray) else v for k, v in result.items()}


def run(args: argparse.Namespace) -> int:
    plan = OutputPlan()
    out_path = plan.file("--out", args.out)
    check_int("--bins", args.bins, low=1)
    check_int("--n-boot", args.n_boot, low=0)
    if args.analysis in _NEEDS_CAL and args.cal is None:
        raise input_error("--cal", None, f"a calibration shard folder or file for {args.analysis}")
    result: dict[str, Any] = {"analysis": args.analysis, "test": str(args.test)}
    if args.analysis == "conformal":
        from medsure.conformal import SplitConformalClassifier
        from medsure.conformal.streaming import fit_streaming, score_streaming

        check_alpha(args.alpha, what="--alpha")
        clf = SplitConformalClassifier(
            args.method,
            alpha=args.alpha,
            conditional="class" if args.class_conditional else "marginal",
            params=_params(args.param) or None,
            seed=args.seed,
        )
        result.update(score_streaming(fit_streaming(clf, args.cal), args.test))
    elif args.analysis == "calibration":
        from medsure.calibration.streaming import calibration_summary_streaming

        result.update(calibration_summary_streaming(args.test, n_bins=args.bins))
    elif args.analysis == "failure":
        from medsure.failure.streaming import failure_metrics_streaming

        result["csfs"] = failure_metrics_streaming(args.test, n_boot=args.n_boot, seed=args.seed)
    elif args.analysis == "segmentation":
        from medsure.segmentation.streaming import segmentation_metrics_streaming

        metrics = segmentation_metrics_streaming(args.test, n_bins=args.bins)
        for key in ("image_dice", "dice_per_image", "hd95_per_image", "image_scores"):
            metrics.pop(key)
        result.update(metrics)
    else:
        from medsure.segmentation.conformal_mask import ConformalMask
        from medsure.segmentation.streaming import fit_mask_streaming, fnr_streaming

        check_alpha(args.alpha, what="--alpha")
        mask = fit_mask_streaming(ConformalMask(args.alpha), args.cal)
        fnr = fnr_streaming(mask, args.test)
        result.update(
            {
                "alpha": args.alpha,
                "labels": mask.class_names_.tolist(),
                "lambda": mask.lambda_.tolist(),
                "n_cal": mask.n_cal_.tolist(),
                "mean_fnr": fnr.mean(axis=0).tolist(),
                "n_test": int(fnr.shape[0]),
            }
        )
    plan.add(out_path, lambda path: write_result_json(path, _jsonable(result)))
    plan.write_all()
    print(f"wrote {args.out}: streamed {args.analysis}")
    return 0
