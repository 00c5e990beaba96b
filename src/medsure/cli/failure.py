"""``medsure failure``: rank every confidence scoring function by how well it flags wrong predictions."""
from __future__ import annotations

import argparse

from medsure.artifact import load_predictions
from medsure.errors import MedsureInputError
from medsure.utils.io import write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "failure", help="failure detection: AURC, e-AURC, AUGRC, AUROC_f, FPR@95 for every CSF, with 95%% intervals",
        description="Evaluate every confidence scoring function (MSR, max logit, entropy, margins, energy, "
                    "DOCTOR, MC-dropout/ensemble/TTA family when samples are given, and a combination "
                    "fitted on --cal only) on --test, with paired bootstrap 95% intervals. Optionally "
                    "choose a review threshold with a guaranteed selective risk.")
    p.add_argument("--cal", required=True, help="calibration prediction file (.npz, with labels)")
    p.add_argument("--test", required=True, help="test prediction file (.npz, with labels)")
    p.add_argument("--samples", default=None,
                   help="test predictions with a sample axis (T, N, K): MC dropout, ensemble or TTA (same ids)")
    p.add_argument("--cal-samples", default=None, help="the same for the calibration cases (enables them in the combination)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--target-risk", type=float, default=None,
                   help="also fit a review threshold on --cal with selective risk <= this value ...")
    p.add_argument("--delta", type=float, default=0.1, help="... with probability >= 1 - delta (default 0.1)")
    p.add_argument("--csf", default="msr", help="CSF used for the review threshold (default msr)")
    p.add_argument("--out", required=True, help="RESULT.json to write")
    p.add_argument("--report", default=None, help="also write an HTML report (risk-coverage curves, worst cases)")
    p.set_defaults(func=run_failure)


def run_failure(args: argparse.Namespace) -> int:
    from medsure.failure.evaluate import compute_csfs, evaluate_failure, prediction_errors, score_csfs
    from medsure.failure.review import SelectiveRiskThreshold

    cal, test = load_predictions(args.cal), load_predictions(args.test)
    test_samples = load_predictions(args.samples) if args.samples else None
    cal_samples = load_predictions(args.cal_samples) if args.cal_samples else None
    if args.bootstrap < 0:
        raise MedsureInputError(f"--bootstrap={args.bootstrap}, expected >= 0")
    scores = score_csfs(cal, test, cal_samples=cal_samples, test_samples=test_samples)
    result = evaluate_failure(cal, test, n_boot=args.bootstrap, seed=args.seed, scores=scores)
    if args.target_risk is not None:
        cal_csfs = compute_csfs(cal, samples=cal_samples)
        test_csfs = scores[0]
        if args.csf not in cal_csfs or args.csf not in test_csfs:
            raise MedsureInputError(f"--csf {args.csf!r} is not available; choose one of {sorted(set(cal_csfs) & set(test_csfs))}")
        sgr = SelectiveRiskThreshold(args.target_risk, args.delta).fit(cal_csfs[args.csf], prediction_errors(cal))
        result["review"] = {"csf": args.csf, **sgr.evaluate(test_csfs[args.csf], prediction_errors(test))}
    result.update({"cal": str(args.cal), "test": str(args.test)})
    write_json(args.out, result)
    if args.report:
        from medsure.failure.report import build_sections
        from medsure.report.html import Report

        report = Report(title="medsure failure detection")
        if test_samples is not None:
            report.notes.append("The sections below rank the CSFs of the single-model predictions; the "
                                "sample-based CSFs (--samples) are in the JSON result.")
        for section in build_sections(cal, test, n_boot=args.bootstrap, seed=args.seed,
                                      target_risk=0.1 if args.target_risk is None else args.target_risk,
                                      delta=args.delta, review_csf=args.csf):
            report.add(section)
        report.write(args.report)
    ranked = sorted(result["csfs"].items(), key=lambda kv: kv[1]["aurc"]["value"])
    print(f"error rate {result['error_rate']:.4f} on {result['n_test']} test cases; AURC (lower is better):")
    for name, m in ranked:
        lo, hi = m["aurc"]["ci"] or (float("nan"), float("nan"))
        auroc = m["auroc_f"]["value"]
        print(f"  {name:32s} AURC {m['aurc']['value']:.4f} [{lo:.4f}, {hi:.4f}]"
              + (f"  AUROC_f {auroc:.3f}" if auroc is not None else ""))
    if "review" in result:
        r = result["review"]
        print(f"review ({r['csf']}, risk <= {r['target_risk']} w.p. >= {1 - r['delta']:.2f}): "
              f"{r['review_share']:.1%} of test cases to the expert, selective risk {r['selective_risk']:.4f}")
    return 0
