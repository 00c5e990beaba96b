"""``medsure demo``: train on embedded data, analyse, write report.html and results.json."""
from __future__ import annotations

import argparse

from medsure.errors import MedsureInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="train on embedded data and write a full report (<= 10 min on 2 cores)")
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, training and sampling")
    p.add_argument("--alpha", type=float, default=0.1, help="conformal miscoverage level (default 0.1)")
    p.add_argument("--quick", action="store_true", help="tiny subsets and 2 epochs (smoke test)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsure.demo import DemoSettings, run_demo

    if not 0 < args.alpha < 1:
        raise MedsureInputError(f"--alpha {args.alpha}, expected a number in (0, 1)")
    run_demo(args.out, DemoSettings(seed=args.seed, alpha=args.alpha, quick=args.quick))
    return 0
