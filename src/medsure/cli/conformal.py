"""``medsure conformal`` (one fitted run) and ``medsure conformal-study`` (the analyses).

Input files are prediction artifacts (:mod:`medsure.artifact`). Their ``logits`` key holds logits
by default; ``--input probs`` declares that it holds probabilities instead, which must be in
[0, 1] with rows summing to 1 (tolerance 1e-3), else the command fails with one message.

The ``--method`` choices and the score options (``--k-reg``, ``--lam``, ``--weight``) come from
the score registry (:data:`medsure.conformal.scores.SCORES`): a score's declared parameters become
options, accepted only with that score. Every output path is checked before anything is computed
and all files are written at the end (:class:`medsure.cli._outputs.OutputPlan`).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medsure.artifact import Predictions, check_compatible, load_predictions
from medsure.cli._outputs import OutputPlan
from medsure.conformal.scores import SCORES
from medsure.utils.io import atomic_write, write_result_json
from medsure.validation import check_alpha, check_float, check_int, input_error

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from medsure.conformal.classifier import Conditional


def _score_options() -> dict[str, tuple]:
    """Every declared score parameter once: name -> (ScoreParam, methods declaring it)."""
    options: dict[str, tuple] = {}
    for spec in SCORES.values():
        for param in spec.params:
            first, methods = options.get(param.name, (param, ()))
            options[param.name] = (first, methods + (spec.name,))
    return options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "conformal",
        help="fit conformal prediction sets on CAL and evaluate them on TEST",
        description="Split conformal prediction sets with a coverage guarantee; writes RESULT.json "
        "(coverage, set sizes, the exact coverage band and a validity flag).",
    )
    _common(p)
    p.add_argument("--method", required=True, choices=tuple(SCORES), help="conformity score")
    p.add_argument(
        "--class-conditional",
        action="store_true",
        help="one threshold per true class (Mondrian): coverage within every class",
    )
    p.add_argument(
        "--group-key",
        default=None,
        help="meta key (e.g. sex) for group-conditional thresholds: coverage within every group",
    )
    p.add_argument(
        "--fallback",
        choices=("marginal", "include"),
        default=None,
        help="for a class/group too small for alpha: use the marginal threshold, or "
        "always include (default: fail naming it)",
    )
    for param, methods in _score_options().values():
        kind = param.constraint.kind
        p.add_argument(
            param.option,
            dest=param.name,
            type=kind,
            default=None,
            help=f"{param.help}; only with --method {' or '.join(methods)}",
        )
    p.add_argument("--out", required=True, help="RESULT.json to write")
    p.add_argument("--sets", default=None, help="SETS.npz to write: boolean (N, K) 'sets', 'ids'")
    p.add_argument("--fail-invalid", action="store_true", help="exit with code 3 when coverage falls outside its band")
    p.add_argument(
        "--report",
        default=None,
        help="also write an HTML report (coverage with its band, per-class or per-stratum coverage, set sizes)",
    )
    p.set_defaults(func=run_conformal)

    s = subparsers.add_parser(
        "conformal-study",
        help="conformal analyses: calibration-size study, confidence sweep, "
        "method comparison, class overlap, hardest cases",
        description="Runs every conformal analysis on CAL/TEST; writes one JSON and one PNG per "
        "analysis into --out-dir, and optionally an HTML report.",
    )
    _common(s)
    s.add_argument(
        "--method",
        default="aps",
        choices=tuple(SCORES),
        help="score for the size study, sweep, overlap and hardest cases (default aps)",
    )
    s.add_argument("--repeats", type=int, default=100, help="random splits per calibration size")
    s.add_argument("--out-dir", required=True, help="folder for the JSON results and plots")
    s.add_argument("--report", default=None, help="also write a self-contained HTML report here")
    s.set_defaults(func=run_study)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cal", required=True, help="calibration prediction file (.npz, with labels)")
    p.add_argument("--test", required=True, help="test prediction file (.npz)")
    p.add_argument("--alpha", type=float, default=0.1, help="miscoverage level in (0, 1) (default 0.1)")
    p.add_argument(
        "--randomized",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="randomized scores where the score allows it (aps/raps/saps): exact coverage, "
        "sets may be empty (--no-randomized: never-empty, conservative sets)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the randomization and splits")
    p.add_argument(
        "--input",
        choices=("logits", "probs"),
        default="logits",
        help="what the files' 'logits' key holds (default logits)",
    )
    p.add_argument(
        "--delta", type=float, default=0.01, help="probability outside the reported coverage band (default 0.01)"
    )


def _load(args: argparse.Namespace) -> tuple[Predictions, Predictions]:
    check_alpha(args.alpha, what="--alpha")
    check_float("--delta", args.delta, low=0.0, high=1.0, closed="neither")
    cal = load_predictions(args.cal)
    test = load_predictions(args.test)
    for option, path, data in (("--cal", args.cal, cal), ("--test", args.test, test)):
        if data.task != "classification":
            raise input_error(
                f"{option} '{path}'",
                f"a {data.task} prediction file",
                "a classification prediction file",
                "conformal sets need classes",
                raw=True,
            )
    check_compatible(cal, test)
    if cal.labels is None:
        raise input_error(
            f"--cal '{args.cal}'",
            "no 'labels' key",
            "labelled calibration predictions",
            "add the true labels",
            raw=True,
        )
    # the one alpha-vs-n check, before any fitting: names --cal and says how many samples --alpha needs
    check_alpha(args.alpha, cal.n_samples, what="--alpha", where=f"--cal '{args.cal}'")
    if test.n_samples == 0:
        raise input_error(f"--test '{args.test}'", "0 samples", "at least 1 test sample", raw=True)
    return cal, test


def _score_params(args: argparse.Namespace) -> dict:
    """The score options given, each checked to belong to ``--method`` (never silently dropped)."""
    params = {}
    for name, (param, methods) in _score_options().items():
        value = getattr(args, name)
        if value is None:
            continue
        if args.method not in methods:
            raise input_error(
                param.option,
                value,
                f"no {param.option} with --method {args.method}",
                f"{param.option} applies only with --method {' or '.join(methods)}",
            )
        params[name] = value
    return params


def run_conformal(args: argparse.Namespace) -> int:
    from medsure.conformal.analysis import evaluate_conformal

    plan = OutputPlan()
    out_path = plan.file("--out", args.out)
    sets_path = plan.file("--sets", args.sets)
    report_path = plan.file("--report", args.report)
    if args.class_conditional and args.group_key:
        raise input_error(
            "--group-key",
            args.group_key,
            "no --group-key with --class-conditional",
            "choose either --class-conditional or --group-key, not both",
        )
    conditional: Conditional = "class" if args.class_conditional else "group" if args.group_key else "marginal"
    if args.fallback is not None and conditional == "marginal":
        raise input_error(
            "--fallback",
            args.fallback,
            "no --fallback for a marginal run",
            "--fallback applies only with --class-conditional or --group-key",
        )
    params = _score_params(args)
    cal, test = _load(args)
    run = evaluate_conformal(
        cal,
        test,
        method=args.method,
        alpha=args.alpha,
        conditional=conditional,
        group_key=args.group_key,
        randomized=args.randomized,
        fallback=args.fallback,
        params=params,
        input=args.input,
        seed=args.seed,
        delta=args.delta,
    )
    result = dict(run.result)
    result.update(
        {
            "class_conditional": bool(args.class_conditional),
            "group_key": args.group_key,
            "n_cal": cal.n_samples,
            "n_test": test.n_samples,
            "seed": args.seed,
            "input": args.input,
            "cal_file": str(args.cal),
            "test_file": str(args.test),
        }
    )
    plan.add(out_path, lambda path: write_result_json(path, result))
    plan.add(sets_path, lambda path: _write_sets(path, run.sets, test))
    if report_path is not None:
        from medsure.conformal.report import build_run_sections
        from medsure.report.html import Report

        report = Report(title="medsure conformal")
        for section in build_run_sections(result):
            report.add(section)
        plan.add(report_path, report.write)
    plan.write_all()
    if result["coverage"] is None:
        print(
            f"{args.method}: mean set size {result['mean_set_size']:.3f}; --test '{args.test}' has no labels: "
            "sets and sizes are written, coverage and validity need test labels"
        )
        return 0
    low, high = result["coverage_band"]
    print(
        f"{args.method}{' class-conditional' if args.class_conditional else ''}: coverage "
        f"{result['coverage']:.4f} (target {1 - args.alpha:.3f}, band [{low:.4f}, {high:.4f}]), "
        f"mean set size {result['mean_set_size']:.3f}, empty {result['empty_rate']:.3f}"
    )
    if not result["valid"]:
        print(f"WARNING: INVALID RUN: {result['band_note']}", file=sys.stderr)
        return 3 if args.fail_invalid else 0
    return 0


def _write_sets(path: Path, sets: np.ndarray, test: Predictions) -> None:
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, sets=sets, ids=test.ids.astype(str), class_names=test.class_names.astype(str))


def _write_figure(path: Path, fig: Figure) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def run_study(args: argparse.Namespace) -> int:
    from medsure.conformal.analysis import evaluate_conformal_study
    from medsure.conformal.report import build_report, figures

    plan = OutputPlan()
    out_dir = plan.folder("--out-dir", str(args.out_dir))  # required: never None
    report_path = plan.file("--report", args.report)
    check_int("--repeats", args.repeats, low=2)
    cal, test = _load(args)
    if test.labels is None:
        raise input_error(
            f"--test '{args.test}'",
            "no 'labels' key",
            "labelled test predictions",
            "every study analysis (coverage per calibration size, sweep, method comparison, class overlap, "
            "hardest cases) measures coverage on test labels; for unlabelled cases use medsure conformal",
            raw=True,
        )
    study = evaluate_conformal_study(
        cal,
        test,
        method=args.method,
        alpha=args.alpha,
        seed=args.seed,
        randomized=args.randomized,
        n_repeats=args.repeats,
        input=args.input,
        delta=args.delta,
    )
    written = []
    for name, result in study.analyses.items():
        plan.add(out_dir / f"{name}.json", partial(write_result_json, result=result))
        written.append(out_dir / f"{name}.json")
    for name, fig in figures(study).items():
        plan.add(out_dir / f"{name}.png", partial(_write_figure, fig=fig))
        written.append(out_dir / f"{name}.png")
    if report_path is not None:
        plan.add(report_path, build_report(study).write)
    plan.write_all()
    print(f"wrote {len(written)} files to {out_dir}" + (f" and {args.report}" if args.report else ""))
    return 0
