"""``medsure failure``: rank every confidence scoring function by how well it flags wrong predictions."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from medsure.artifact import Predictions, load_predictions
from medsure.cli._outputs import OutputPlan
from medsure.utils.io import write_result_json
from medsure.validation import input_error


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "failure",
        help="failure detection: AURC, e-AURC, AUGRC, AUROC_f, FPR@95 for every CSF, with 95%% intervals",
        description="Evaluate every confidence scoring function (MSR, max logit, entropy, margins, energy, "
        "DOCTOR, MC-dropout/ensemble/TTA family when samples are given, Grad-CAM concentration "
        "with --cam, and a combination fitted on --cal only) on --test, with paired bootstrap 95%% "
        "intervals. AURC and e-AURC are reported in the discrete form and in fd-shifts' "
        "interpolated form (aurc_interpolated, eaurc_interpolated); each metric names its variant. "
        "Optionally choose a review threshold with a guaranteed selective risk.",
    )
    p.add_argument("--cal", required=True, help="calibration prediction file (.npz, with labels)")
    p.add_argument("--test", required=True, help="test prediction file (.npz, with labels)")
    p.add_argument(
        "--samples",
        default=None,
        help="test predictions with a sample axis (T, N, K): MC dropout, ensemble or TTA (same ids)",
    )
    p.add_argument(
        "--cal-samples", default=None, help="the same for the calibration cases (enables them in the combination)"
    )
    p.add_argument(
        "--cam",
        default=None,
        help="cams.npz written by `medsure explain` for the test cases: adds the cam_concentration CSF "
        "(the map of each case's predicted class; every test id needed)",
    )
    p.add_argument("--cal-cam", default=None, help="the same for the calibration cases (enables it in the combination)")
    p.add_argument(
        "--combine-weights",
        default=None,
        metavar="NAME=W,...",
        help="fixed weights of the combined CSF instead of learned ones, e.g. msr=1,energy=0.5: the "
        "combined score is sum w * (csf - cal mean) / cal std over CSFs oriented higher = confident",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--target-risk",
        type=float,
        default=None,
        help="also fit a review threshold on --cal with selective risk <= this value ...",
    )
    p.add_argument("--delta", type=float, default=0.1, help="... with probability >= 1 - delta (default 0.1)")
    p.add_argument("--csf", default="msr", help="CSF used for the review threshold (default msr)")
    p.add_argument("--out", required=True, help="RESULT.json to write")
    p.add_argument("--report", default=None, help="also write an HTML report (risk-coverage curves, worst cases)")
    p.set_defaults(func=run_failure)


def parse_weights(text: str, option: str = "--combine-weights") -> dict[str, float]:
    """``"msr=1,energy=0.5"`` -> ``{"msr": 1.0, "energy": 0.5}``."""
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            weight = float(value) if sep and name.strip() else math.nan
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or name.strip() in weights:
            raise input_error(
                option,
                text,
                "comma-separated NAME=WEIGHT pairs with finite weights and distinct names, e.g. msr=1,energy=0.5",
                raw=False,
            )
        weights[name.strip()] = weight
    return weights


def load_cams(path: str, pred: Predictions, option: str = "--cam") -> np.ndarray:
    """The predicted-class Grad-CAM map ``(N, H, W)`` of every case of ``pred`` from a
    ``medsure explain`` ``cams.npz`` (keys ids, classes, maps, class_names), in ``pred``'s order."""
    if not Path(path).is_file():
        raise input_error(option, path, "an existing cams.npz written by `medsure explain`", raw=False)
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, classes, maps = (np.asarray(data[k]) for k in ("ids", "classes", "maps"))
            names = [str(c) for c in data["class_names"]] if "class_names" in data.files else None
    except KeyError as exc:
        raise input_error(
            option,
            path,
            "a cams.npz with keys ids, classes, maps (from `medsure explain`)",
            f"missing key {exc}",
            raw=True,
        ) from None
    except (OSError, ValueError) as exc:
        raise input_error(
            option, path, "a readable .npz file written by `medsure explain`", str(exc), raw=True
        ) from None
    if maps.ndim != 3 or ids.shape[0] != maps.shape[0] or classes.shape[0] != maps.shape[0]:
        raise input_error(
            option,
            f"ids {ids.shape}, classes {classes.shape}, maps {maps.shape}",
            "one id and one class per map (R, H, W)",
            raw=True,
        )
    if names is not None and names != [str(c) for c in pred.class_names]:
        raise input_error(
            option,
            f"class names {names}",
            f"the predictions' class names {[str(c) for c in pred.class_names]}",
            raw=True,
        )
    predicted = pred.probabilities().argmax(axis=1)
    row_of = {(str(i), int(c)): r for r, (i, c) in enumerate(zip(ids, classes, strict=True))}
    missing = [str(i) for i, c in zip(pred.ids, predicted, strict=True) if (str(i), int(c)) not in row_of]
    if missing:
        raise input_error(
            option,
            f"no predicted-class map for {len(missing)} of {pred.n_samples} cases (first: {missing[:3]})",
            "a map of the predicted class for every case id of the prediction file",
            "run `medsure explain` on the same split and ids, without --classes",
            raw=True,
        )
    extra = sorted({str(i) for i in ids} - {str(i) for i in pred.ids})
    if extra:
        raise input_error(
            option,
            f"{len(extra)} ids not in the prediction file (first: {extra[:3]})",
            "the ids of the prediction file it is paired with",
            raw=True,
        )
    rows = [row_of[(str(i), int(c))] for i, c in zip(pred.ids, predicted, strict=True)]
    return maps[rows].astype(np.float64)


def run_failure(args: argparse.Namespace) -> int:
    from medsure.failure.evaluate import evaluate_failure

    plan = OutputPlan()
    out_path = plan.file("--out", args.out)
    report_path = plan.file("--report", args.report)
    if args.bootstrap < 0:
        raise input_error("--bootstrap", args.bootstrap, "an integer >= 0")
    weights = parse_weights(args.combine_weights) if args.combine_weights else None
    cal, test = load_predictions(args.cal), load_predictions(args.test)
    if test.labels is None:  # checked here so the message names the file
        raise input_error(
            f"--test '{args.test}'",
            "no 'labels' key",
            "labelled test predictions",
            "every failure metric (AURC, AUROC_f, the review threshold) needs test labels to know which "
            "predictions were wrong",
            raw=True,
        )
    test_samples = load_predictions(args.samples) if args.samples else None
    cal_samples = load_predictions(args.cal_samples) if args.cal_samples else None
    test_cams = load_cams(args.cam, test, "--cam") if args.cam else None
    cal_cams = load_cams(args.cal_cam, cal, "--cal-cam") if args.cal_cam else None
    result = evaluate_failure(
        cal,
        test,
        cal_samples=cal_samples,
        test_samples=test_samples,
        cal_cams=cal_cams,
        test_cams=test_cams,
        n_boot=args.bootstrap,
        seed=args.seed,
        combine_weights=weights,
        target_risk=args.target_risk,
        delta=args.delta,
        review_csf=args.csf,
    )
    record = result.to_dict()
    record.update({"cal": str(args.cal), "test": str(args.test)})
    plan.add(out_path, lambda path: write_result_json(path, record))
    if report_path is not None:
        from medsure.failure.report import build_sections
        from medsure.report.html import Report

        report = Report(title="medsure failure detection")
        for section in build_sections(result, test=test):
            report.add(section)
        plan.add(report_path, report.write)
    plan.write_all()
    print(
        f"error rate {result.error_rate:.4f} on {result.n_test} test cases; AURC (lower is better), "
        "discrete with 95% interval and fd-shifts' trapezoid form:"
    )
    for name, m in result.ranked():
        lo, hi = m["aurc"]["ci"] or (float("nan"), float("nan"))
        auroc = m["auroc_f"]["value"]
        print(
            f"  {name:32s} AURC {m['aurc']['value']:.4f} [{lo:.4f}, {hi:.4f}]"
            f"  fd-shifts {m['aurc_interpolated']['value']:.4f}"
            + (f"  AUROC_f {auroc:.3f}" if auroc is not None else "")
        )
    if result.combined["status"] == "undefined":
        print(f"  {'combined':32s} undefined: {result.combined['reason']}")
    if result.review is not None:
        r = result.review
        print(
            f"review ({r['csf']}, risk <= {r['target_risk']} w.p. >= {1 - r['delta']:.2f}): "
            f"{r['review_share']:.1%} of test cases to the expert, selective risk {r['selective_risk']:.4f}"
        )
    return 0
