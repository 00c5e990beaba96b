"""The ``medsure`` command line.

Each module in this package that defines ``register(subparsers)`` adds its subcommands; the
subcommand's handler is stored as ``func`` on the parsed namespace and returns an exit code.
Bad input raises :class:`medsure.errors.MedsureError`, printed as one line, exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from medsure import __version__
from medsure.errors import MedsureError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsure",
        description="Uncertainty with guarantees for medical image models.",
    )
    parser.add_argument("--version", action="version", version=f"medsure {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except MedsureError as exc:
        print(f"medsure {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an --out that is a folder, a missing or read-only parent...
        print(f"medsure {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
