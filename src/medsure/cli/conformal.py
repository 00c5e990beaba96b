"""``medsure conformal`` (one calibrated run) and ``medsure conformal-study`` (the analyses).

Input files are prediction artifacts (:mod:`medsure.artifact`). Their ``logits`` key holds logits
by default; ``--input probs`` declares that it holds probabilities instead, which must be in
[0, 1] with rows summing to 1 (tolerance 1e-3), else the command fails with one message.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from medsure.artifact import Predictions, check_compatible, load_predictions
from medsure.errors import MedsureInputError
from medsure.utils.io import atomic_write, write_json

_METHODS = ("lac", "aps", "raps", "topk", "saps")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "conformal", help="calibrate conformal prediction sets on CAL and evaluate them on TEST",
        description="Split conformal prediction sets with a coverage guarantee; writes RESULT.json "
                    "(coverage, set sizes, the exact coverage band and a validity flag).")
    _common(p)
    p.add_argument("--method", required=True, choices=_METHODS, help="conformity score")
    p.add_argument("--class-conditional", action="store_true",
                   help="one threshold per true class (Mondrian): coverage within every class")
    p.add_argument("--group-key", default=None,
                   help="meta key (e.g. sex) for group-conditional thresholds: coverage within every group")
    p.add_argument("--fallback", choices=("marginal", "include"), default=None,
                   help="for a class/group too small for alpha: use the marginal threshold, or "
                        "always include (default: fail naming it)")
    p.add_argument("--k-reg", type=int, default=None, help="RAPS k_reg (default: tuned with --lam)")
    p.add_argument("--lam", type=float, default=None, help="RAPS lambda (default: tuned)")
    p.add_argument("--weight", type=float, default=None, help="SAPS rank weight (default 0.2)")
    p.add_argument("--out", required=True, help="RESULT.json to write")
    p.add_argument("--sets", default=None, help="SETS.npz to write: boolean (N, K) 'sets', 'ids'")
    p.add_argument("--fail-invalid", action="store_true",
                   help="exit with code 3 when coverage falls outside its band")
    p.set_defaults(func=run_conformal)

    s = subparsers.add_parser(
        "conformal-study", help="conformal analyses: calibration-size study, confidence sweep, "
                                "method comparison, class overlap, hardest cases",
        description="Runs every conformal analysis on CAL/TEST; writes one JSON and one PNG per "
                    "analysis into --out-dir, and optionally an HTML report.")
    _common(s)
    s.add_argument("--method", default="aps", choices=_METHODS,
                   help="score for the size study, sweep, overlap and hardest cases (default aps)")
    s.add_argument("--repeats", type=int, default=100, help="random splits per calibration size")
    s.add_argument("--out-dir", required=True, help="folder for the JSON results and plots")
    s.add_argument("--report", default=None, help="also write a self-contained HTML report here")
    s.set_defaults(func=run_study)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cal", required=True, help="calibration prediction file (.npz, with labels)")
    p.add_argument("--test", required=True, help="test prediction file (.npz)")
    p.add_argument("--alpha", type=float, default=0.1, help="miscoverage level in (0, 1) (default 0.1)")
    p.add_argument("--randomized", action=argparse.BooleanOptionalAction, default=True,
                   help="randomized aps/raps/saps scores: exact coverage, sets may be empty "
                        "(--no-randomized: never-empty, conservative sets)")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomization and splits")
    p.add_argument("--input", choices=("logits", "probs"), default="logits",
                   help="what the files' 'logits' key holds (default logits)")
    p.add_argument("--delta", type=float, default=0.01,
                   help="probability outside the reported coverage band (default 0.01)")


def _load(args: argparse.Namespace) -> tuple[Predictions, Predictions]:
    from medsure.conformal.quantile import check_alpha

    check_alpha(args.alpha)
    cal = load_predictions(args.cal)
    test = load_predictions(args.test)
    if cal.task != "classification" or test.task != "classification":
        raise MedsureInputError("conformal sets need classification prediction files")
    check_compatible(cal, test)
    if cal.labels is None:
        raise MedsureInputError(f"{args.cal} has no 'labels'; the calibration file must be labelled")
    return cal, test


def run_conformal(args: argparse.Namespace) -> int:
    from medsure.conformal.analysis import evaluate
    from medsure.conformal.classifier import SplitConformalClassifier
    from medsure.conformal.metrics import set_sizes

    cal, test = _load(args)
    if args.class_conditional and args.group_key:
        raise MedsureInputError("choose either --class-conditional or --group-key, not both")
    conditional = "class" if args.class_conditional else "group" if args.group_key else "marginal"
    # an option that does not apply is an error, not silently dropped
    for option, value, applies, where in (("--k-reg", args.k_reg, args.method == "raps", "--method raps"),
                                          ("--lam", args.lam, args.method == "raps", "--method raps"),
                                          ("--weight", args.weight, args.method == "saps", "--method saps"),
                                          ("--fallback", args.fallback, conditional != "marginal",
                                           "--class-conditional or --group-key")):
        if value is not None and not applies:
            raise MedsureInputError(f"{option} {value} applies only with {where}")
    if not 0 < args.delta < 1:
        raise MedsureInputError(f"--delta {args.delta}, expected a number in (0, 1)")
    clf = SplitConformalClassifier(
        args.method, args.alpha, conditional=conditional, group_key=args.group_key,
        randomized=args.randomized, fallback=args.fallback, k_reg=args.k_reg, lam=args.lam,
        weight=args.weight, input=args.input, seed=args.seed)
    clf.calibrate(cal)
    sets = clf.predict_set(test)
    if test.labels is not None:
        groups = test.meta.get(args.group_key) if args.group_key else None
        result = evaluate(clf, sets, test.labels, groups=groups, delta=args.delta)
    else:
        sizes = set_sizes(sets)
        result = clf.describe()
        result.update({"coverage": None, "valid": None, "coverage_band": None,
                       "per_class_coverage": None, "class_names": list(clf.class_names_),
                       "mean_set_size": float(sizes.mean()), "median_set_size": float(np.median(sizes)),
                       "empty_rate": float(np.mean(sizes == 0)),
                       "size_histogram": np.bincount(sizes, minlength=clf.n_classes_ + 1).tolist(),
                       "band_note": "test file has no labels: coverage cannot be measured"})
    result.update({"class_conditional": bool(args.class_conditional), "group_key": args.group_key,
                   "n_cal": cal.n_samples, "n_test": test.n_samples, "seed": args.seed,
                   "input": args.input, "cal_file": str(args.cal), "test_file": str(args.test)})
    write_json(args.out, result)
    if args.sets:
        with atomic_write(args.sets, "wb") as handle:
            np.savez_compressed(handle, sets=sets, ids=test.ids.astype(str),
                                class_names=test.class_names.astype(str))
    if result["coverage"] is None:
        print(f"{args.method}: mean set size {result['mean_set_size']:.3f} (no test labels)")
        return 0
    low, high = result["coverage_band"]
    print(f"{args.method}{' class-conditional' if args.class_conditional else ''}: coverage "
          f"{result['coverage']:.4f} (target {1 - args.alpha:.3f}, band [{low:.4f}, {high:.4f}]), "
          f"mean set size {result['mean_set_size']:.3f}, empty {result['empty_rate']:.3f}")
    if not result["valid"]:
        print(f"WARNING: INVALID RUN: {result['band_note']}", file=sys.stderr)
        return 3 if args.fail_invalid else 0
    return 0


def run_study(args: argparse.Namespace) -> int:
    from medsure.conformal.report import run_all_analyses, write_analysis_outputs

    cal, test = _load(args)
    if test.labels is None:
        raise MedsureInputError(f"{args.test} has no 'labels'; the analyses need a labelled test file")
    if args.repeats < 2:
        raise MedsureInputError(f"--repeats={args.repeats}, expected at least 2")
    results = run_all_analyses(cal, test, method=args.method, alpha=args.alpha, seed=args.seed,
                               randomized=args.randomized, n_repeats=args.repeats,
                               input=args.input, delta=args.delta)
    out_dir = Path(args.out_dir)
    written = write_analysis_outputs(results, out_dir, thumbnails=test.thumbnails,
                                     report_path=args.report)
    print(f"wrote {len(written)} files to {out_dir}" + (f" and {args.report}" if args.report else ""))
    return 0
