"""``medsure policy fit``: fit the hand-off policy on labelled calibration predictions and save it."""

from __future__ import annotations

import argparse

from medsure.cli._outputs import OutputPlan


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "policy",
        help="hand-off policy: fit once on calibration data, reuse for triage",
        description="Fit everything that decides a new case on labelled calibration predictions and save it.",
    )
    actions = p.add_subparsers(dest="policy_action", metavar="ACTION", required=True)
    fit = actions.add_parser(
        "fit",
        help="fit a policy on --cal and write it to --out (JSON)",
        description="Fit conformal set thresholds (classification), the guaranteed-risk review threshold "
        "(--risk), conformal-mask thresholds and segmentation limits (--seg-alpha), and limits on the "
        "optional scores the file carries (meta__evidential_u, meta__certified_radius). The policy records "
        "alpha, delta, n_cal, the calibration file's SHA-256, class names, medsure version and creation time.",
    )
    fit.add_argument("--cal", required=True, help="labelled calibration prediction file (.npz)")
    fit.add_argument("--method", default="aps", help="conformal score: lac, aps (default), raps, topk, saps")
    fit.add_argument("--alpha", type=float, default=0.1, help="set miscoverage (default 0.1)")
    fit.add_argument(
        "--conditional",
        choices=("marginal", "class"),
        default="marginal",
        help="one set threshold, or one per class (default marginal)",
    )
    fit.add_argument(
        "--fallback",
        choices=("marginal", "include"),
        default=None,
        help="class-conditional: for a class with too few calibration cases use the marginal threshold or "
        "always include the label (default: refuse)",
    )
    fit.add_argument(
        "--risk",
        type=float,
        default=None,
        help="highest error rate allowed among auto-accepted cases (classification; none: no review threshold)",
    )
    fit.add_argument("--delta", type=float, default=0.05, help="... guaranteed with probability 1 - delta (0.05)")
    fit.add_argument("--csf", default="msr", help="confidence scoring function of the review threshold (msr)")
    fit.add_argument("--seg-alpha", type=float, default=None, help="conformal-mask target FNR (segmentation)")
    fit.add_argument(
        "--seg-review-rate",
        type=float,
        default=0.1,
        help="share of new images each segmentation limit may send to review (default 0.1)",
    )
    fit.add_argument(
        "--meta-review-rate",
        type=float,
        default=0.05,
        help="the same for the optional evidential / certification scores (default 0.05)",
    )
    fit.add_argument(
        "--split",
        type=float,
        default=0.5,
        help="with --risk: share of cal cases fitting the sets and limits; the rest fits the review "
        "threshold (default 0.5)",
    )
    fit.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    fit.add_argument("--out", required=True, help="policy.json to write")
    fit.set_defaults(func=run_policy_fit)


def run_policy_fit(args: argparse.Namespace) -> int:
    from medsure.artifact import load_predictions
    from medsure.handoff.policy import Policy, file_sha256, save_policy

    plan = OutputPlan()
    out = plan.file("--out", args.out)
    cal = load_predictions(args.cal)
    policy = Policy(
        args.method,
        args.alpha,
        conditional=args.conditional,
        fallback=args.fallback,
        risk=args.risk,
        delta=args.delta,
        csf=args.csf,
        seg_alpha=args.seg_alpha,
        seg_review_rate=args.seg_review_rate,
        meta_review_rate=args.meta_review_rate,
        split=args.split,
        seed=args.seed,
    ).fit(cal, cal_sha256=file_sha256(args.cal))
    plan.add(out, lambda path: save_policy(path, policy))
    plan.write_all()
    parts = [f"{policy.task_} policy for {policy.n_classes_} classes from {policy.n_cal_} calibration cases"]
    if policy.review_ is not None:
        threshold = policy.review_["threshold"]
        parts.append(
            "no review threshold could be certified (every case will go to review)"
            if threshold is None
            else f"review threshold {policy.csf} >= {threshold:.4g} (risk bound {policy.review_['risk_bound']:.3g})"
        )
    print(f"wrote {out}: " + "; ".join(parts))
    return 0
