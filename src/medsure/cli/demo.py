"""``medsure demo``: train on embedded data, analyse, write report.html and results.json."""

from __future__ import annotations

import argparse

from medsure.cli._outputs import OutputPlan
from medsure.validation import check_alpha


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="train on embedded data and write a full report (<= 10 min on 2 cores)")
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, training and sampling")
    p.add_argument("--alpha", type=float, default=0.1, help="conformal miscoverage level (default 0.1)")
    p.add_argument("--quick", action="store_true", help="tiny subsets and 2 epochs (smoke test)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsure.demo import DemoSettings, run_demo

    check_alpha(args.alpha, what="--alpha")
    out = OutputPlan().folder("--out", args.out)  # checked before minutes of training
    run_demo(out, DemoSettings(seed=args.seed, alpha=args.alpha, quick=args.quick))
    return 0
