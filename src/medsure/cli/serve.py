"""``medsure serve``: the review web page for a worklist (FastAPI + uvicorn, the ``review`` extra)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from medsure.validation import input_error

INSTALL_HINT = "install the review extra: pip install 'medsure[review]'"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="review web page for a worklist: queue, case pages, decisions stored in SQLite",
        description="Serve the worklist written by `medsure triage` to reviewers. Every page needs the access "
        "token printed at start (or MEDSURE_REVIEW_TOKEN): open the printed link once, or send "
        "'Authorization: Bearer TOKEN'. Decisions go to an append-only SQLite database (WAL mode).",
    )
    p.add_argument("--worklist", required=True, help="worklist folder written by `medsure triage`")
    p.add_argument("--db", default=None, help="decision database (default: review.sqlite in the worklist folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.set_defaults(func=run_serve)


def access_token() -> str:
    """``MEDSURE_REVIEW_TOKEN`` when set (at least 16 characters), else a fresh random token."""
    given = os.environ.get("MEDSURE_REVIEW_TOKEN")
    if given is None:
        return secrets.token_urlsafe(24)
    if len(given) < 16 or any(c.isspace() for c in given):
        raise input_error(
            "MEDSURE_REVIEW_TOKEN",
            f"a token of {len(given)} characters" + (" with spaces" if any(c.isspace() for c in given) else ""),
            "at least 16 characters without spaces",
            "unset it to get a random token",
            raw=True,
        )
    return given


def open_review(worklist_path: str, db_path: str | None):
    """The checked worklist and database (bad input: one line, nothing written)."""
    from medsure.cli._outputs import check_output_file
    from medsure.review.db import ReviewDB
    from medsure.review.worklist import load_worklist

    worklist = load_worklist(worklist_path)
    path = Path(db_path) if db_path is not None else worklist.folder / "review.sqlite"
    if not path.exists():
        check_output_file("--db", path)
        path.parent.mkdir(parents=True, exist_ok=True)
    worklist_id = str(worklist.document.get("policy", {}).get("worklist_id", "")) or None
    return worklist, ReviewDB(path, worklist_id=worklist_id)


def run_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise input_error("the review server", f"no module '{exc.name}'", "fastapi and uvicorn", INSTALL_HINT) from None
    from medsure.review.app import create_app

    if not 1 <= args.port <= 65535:
        raise input_error("--port", args.port, "an integer in [1, 65535]")
    token = access_token()
    worklist, db = open_review(args.worklist, args.db)
    app = create_app(worklist, db, token)
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"medsure review: {len(worklist.cases)} cases, decisions in {db.path}", flush=True)
    print(f"open http://{shown_host}:{args.port}/?token={token}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host} without TLS: anyone on the network who sees the token can use it; "
            "put the server behind an HTTPS proxy",
            file=sys.stderr,
            flush=True,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False)
    return 0
