"""The ``medsure`` command line.

Each module in this package that defines ``register(subparsers)`` adds its subcommands; the
subcommand's handler is stored as ``func`` on the parsed namespace and returns an exit code.
Bad input raises :class:`medsure.errors.MedsureError`, printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
from typing import NoReturn

from medsure import __version__
from medsure.errors import MedsureError
from medsure.validation import input_error


class _Parser(argparse.ArgumentParser):
    """argparse's own refusals (a mistyped number or choice, a missing option) in the house format,
    on one line like every other error, instead of a usage block followed by the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {argparse_message(message, self.prog)}\n")


_TYPE_WORDS = {"float": "a number", "int": "an integer"}


def argparse_message(message: str, prog: str) -> str:
    """Translate an argparse error message into ``<what>: got <given>; expected <expected>. <hint>``."""
    hint = f"run '{prog} --help' for the options"
    if m := re.fullmatch(r"argument (\S+?)(?:/\S+)?: invalid (\w+) value: (.*)", message):
        option, kind, value = m.groups()
        return str(input_error(option, value, _TYPE_WORDS.get(kind, f"a {kind} value"), hint, raw=True))
    if m := re.fullmatch(r"argument (\S+?)(?:/\S+)?: invalid choice: (.*?) \(choose from (.*)\)", message):
        option, value, choices = m.groups()
        return str(input_error(option, value, f"one of {choices}", hint, raw=True))
    if m := re.fullmatch(r"argument (\S+?)(?:/\S+)?: expected (.*)", message):
        option, count = m.groups()
        return str(
            input_error(option, "no value", count.removesuffix("s").replace("argument", "value"), hint, raw=True)
        )
    if m := re.fullmatch(r"the following arguments are required: (.*)", message):
        return str(input_error(m.group(1), "nothing", "a value for each (they are required)", hint, raw=True))
    if m := re.fullmatch(r"unrecognized arguments: (.*)", message):
        return str(input_error("arguments", f"unknown {m.group(1)}", "only the listed options", hint, raw=True))
    return f"{message}. {hint[0].upper()}{hint[1:]}"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what was typed (medsure train --nproc re-runs it)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except MedsureError as exc:
        print(f"medsure {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only folder, a full disk... (utils.io names the user's path)
        print(f"medsure {args.command}: error: {_os_error_message(exc)}", file=sys.stderr)
        return 2


def _os_error_message(exc: OSError) -> str:
    """One line in the house format for an operating-system error on a user's file."""
    name = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = exc.strerror or str(exc)
    if name is None:
        return str(
            input_error(
                "file operation",
                f"the system error '{reason}'",
                "a readable input and a writable output path",
                raw=True,
            )
        )
    return str(
        input_error(
            f"file '{name}'", f"the system error '{reason}'", "a readable input or a writable output path", raw=True
        )
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
