"""The review database: expert decisions in SQLite, append-only.

Every decision is one row, inserted in its own transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``);
a new decision for a case points at the one it replaces (``supersedes``) and the old row stays:
triggers refuse every ``UPDATE`` and ``DELETE``, so the history cannot be rewritten through SQL.
The database runs in WAL mode, so readers never block the writer. Every statement is
parameterised. A connection is opened per call, so the object can be shared between threads.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medsure.validation import input_error

__all__ = ["SCHEMA_VERSION", "ReviewDB", "EXPORT_COLUMNS", "decisions_csv", "uncell"]

SCHEMA_VERSION = 1
EXPORT_COLUMNS = ("decision_id", "case_id", "label", "note", "reviewer", "decided_at", "supersedes", "current")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS medsure_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL,
    label TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    supersedes INTEGER REFERENCES decisions(id)
);
CREATE INDEX IF NOT EXISTS decisions_case ON decisions(case_id, id);
CREATE TRIGGER IF NOT EXISTS decisions_no_update BEFORE UPDATE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only: insert a new decision instead'); END;
CREATE TRIGGER IF NOT EXISTS decisions_no_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only: the history is kept'); END;
"""


class ReviewDB:
    """Decisions of one worklist.

    Parameters
    ----------
    path : the SQLite file (created when missing)
    worklist_id : an identifier of the worklist (its SHA-256), stored on creation and checked on
        every later opening, so one database never mixes two worklists
    option : the option that named the file, for messages
    """

    def __init__(self, path: str | os.PathLike, *, worklist_id: str | None = None, option: str = "--db") -> None:
        self.path = Path(path)
        self.option = option
        self._open_checked(worklist_id)

    # ---- connection ------------------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        """A new connection; autocommit off (isolation_level None: explicit BEGIN/COMMIT only)."""
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.execute("PRAGMA busy_timeout = 30000")
        con.execute("PRAGMA foreign_keys = ON")
        return con

    def _fail(self, given: str, hint: str | None = None) -> Exception:
        return input_error(
            self.option,
            f"'{self.path}', {given}",
            "a medsure review database (SQLite) or a path for a new one",
            hint,
            raw=True,
        )

    def _open_checked(self, worklist_id: str | None) -> None:
        if self.path.is_dir():
            raise self._fail("a folder")
        existed = self.path.exists() and self.path.stat().st_size > 0
        if existed:
            with open(self.path, "rb") as handle:
                if handle.read(16) != b"SQLite format 3\x00":
                    raise self._fail("which is not an SQLite database", "move it away or name another file")
        elif not os.access(self.path.parent if str(self.path.parent) else Path("."), os.W_OK):
            raise self._fail("in a folder that cannot be written")
        try:
            con = self.connect()
            try:
                if existed:
                    check = con.execute("PRAGMA quick_check").fetchone()
                    if not check or check[0] != "ok":
                        raise self._fail(f"a damaged database ({check[0] if check else 'no answer'})")
                    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                    if not {"medsure_meta", "decisions"} <= tables:
                        raise self._fail("an SQLite file that is not a medsure review database")
                mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise self._fail(f"a database that cannot use WAL mode (journal mode {mode})")
                con.execute("BEGIN IMMEDIATE")
                # statement by statement inside one transaction (executescript would commit first);
                # a trigger's body ends in "; END;", so splitting at ";\n" keeps each statement whole
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        con.execute(statement)
                meta = dict(con.execute("SELECT key, value FROM medsure_meta").fetchall())
                if not meta:
                    con.execute(
                        "INSERT INTO medsure_meta (key, value) VALUES (?, ?), (?, ?)",
                        ("schema_version", str(SCHEMA_VERSION), "worklist_id", worklist_id or ""),
                    )
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            finally:
                con.close()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise self._fail("which another program keeps locked", "close it and try again") from None
            raise self._fail(f"which SQLite cannot read ({exc})", "move it away or name another file") from None
        except sqlite3.DatabaseError as exc:
            raise self._fail(f"which SQLite cannot read ({exc})", "move it away or name another file") from None
        if int(meta.get("schema_version", SCHEMA_VERSION)) > SCHEMA_VERSION:
            raise self._fail(f"a database of schema {meta['schema_version']}", "upgrade medsure")
        stored = meta.get("worklist_id", "")
        if worklist_id and stored and stored != worklist_id:
            raise self._fail(
                "the database of another worklist", "use a new --db for this worklist, or the worklist it belongs to"
            )

    # ---- writing ---------------------------------------------------------------------------------
    def add_decision(self, case_id: str, label: str, reviewer: str, note: str = "") -> dict[str, Any]:
        """Insert one decision in its own transaction; returns the stored row.

        The previous current decision of the case (if any) is recorded in ``supersedes``; it is
        never changed.
        """
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        con = self.connect()
        try:
            con.execute("BEGIN IMMEDIATE")  # the write lock first: the superseded id cannot change under us
            row = con.execute("SELECT MAX(id) FROM decisions WHERE case_id = ?", (case_id,)).fetchone()
            previous = row[0] if row else None
            cursor = con.execute(
                "INSERT INTO decisions (case_id, label, note, reviewer, decided_at, supersedes) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (case_id, label, note, reviewer, now, previous),
            )
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()
        return {
            "decision_id": cursor.lastrowid,
            "case_id": case_id,
            "label": label,
            "note": note,
            "reviewer": reviewer,
            "decided_at": now,
            "supersedes": previous,
        }

    # ---- reading ---------------------------------------------------------------------------------
    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        con = self.connect()
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(sql, tuple(params)).fetchall()]
        finally:
            con.close()

    def current(self) -> dict[str, dict[str, Any]]:
        """The latest decision of every decided case, by case id."""
        rows = self._rows(
            "SELECT d.* FROM decisions d JOIN (SELECT case_id, MAX(id) AS id FROM decisions GROUP BY case_id) m "
            "ON d.id = m.id"
        )
        return {r["case_id"]: r for r in rows}

    def history(self, case_id: str) -> list[dict[str, Any]]:
        """Every decision of one case, oldest first."""
        return self._rows("SELECT * FROM decisions WHERE case_id = ? ORDER BY id", (case_id,))

    def all_decisions(self) -> list[dict[str, Any]]:
        """Every decision, oldest first, with ``current`` marking the latest of each case."""
        rows = self._rows(
            "SELECT d.*, (d.id = (SELECT MAX(id) FROM decisions e WHERE e.case_id = d.case_id)) AS current "
            "FROM decisions d ORDER BY d.id"
        )
        return rows


def decisions_csv(rows: list[dict[str, Any]]) -> str:
    """The export CSV of :meth:`ReviewDB.all_decisions` rows (one row per decision, history kept).

    Cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``) are
    prefixed with a quote (OWASP CSV injection).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r["id"],
                _cell(r["case_id"]),
                _cell(r["label"]),
                _cell(r["note"]),
                _cell(r["reviewer"]),
                r["decided_at"],
                "" if r["supersedes"] is None else r["supersedes"],
                int(bool(r["current"])),
            ]
        )
    return buffer.getvalue()


def uncell(text: str) -> str:
    """Undo :func:`_cell` when reading an exported CSV back."""
    return text[1:] if text[:1] == "'" and text[1:2] in ("=", "+", "-", "@", "\t", "\r") else text


def _cell(value: Any) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
