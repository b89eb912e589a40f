"""The SQLite store's integrity check: ``PRAGMA quick_check`` (or ``integrity_check``) on a
read-only connection of its own.

SQLite notices a damaged page only when a statement reads it: a store with pages 40–59
overwritten opens, answers ``/health`` and takes publishes, and only a read over those pages
fails (issue 19, item 17). The check reads every page: per million events 0.3 s with the file
cached, ~4 s read from disk (docs/reliability.md), so the server runs it in the background once
it is ready (``aggregator/actors/integrity.py``) rather than before.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from aggregator.store.base import StoreDamaged, StoreUnavailable
from aggregator.store.sqlite_keys import bucket_of
from aggregator.store.sqlite_reader import damaged, describe, is_damage
from aggregator.store.sqlite_schema import key_hash

# The problems a check lists at most: the first names the damage, the count says how much.
MAX_PROBLEMS = 100
PRAGMAS = {"quick": "quick_check", "full": "integrity_check"}
# The dedup index is a table of its own (``keys``, sqlite_keys.py), so no PRAGMA compares it with
# the events: one byte changed in it passed integrity_check, and a resend of the event whose key
# it held was stored twice. ``full`` compares them: every event whose bucket was merged past it
# has its key row, and every key row of a stored event names an event with that hash.
MISSING_KEYS = """SELECT count(*) FROM events AS e JOIN merged AS m
    ON m.bucket = bucket_of(key_hash(e.topic, e.event_id)) AND e.seq <= m.upto
    WHERE NOT EXISTS (
        SELECT 1 FROM keys AS k WHERE k.h = key_hash(e.topic, e.event_id) AND k.seq = e.seq)"""
WRONG_KEYS = """SELECT count(*) FROM keys AS k LEFT JOIN events AS e ON e.seq = k.seq
    WHERE k.seq >= (SELECT coalesce(min(seq), (SELECT last_seq + 1 FROM counters)) FROM events)
    AND (e.seq IS NULL OR key_hash(e.topic, e.event_id) != k.h)"""


class CheckInterrupted(Exception):
    """``interrupt`` stopped the check before it finished."""


class IntegrityCheck:
    """One run of the check. ``run`` blocks (a worker thread's); ``interrupt``, from any thread,
    makes it raise ``CheckInterrupted`` within milliseconds (a stopping server must not wait)."""

    def __init__(self, path: Path, level: str = "quick") -> None:
        self.path = path
        self.pragma = PRAGMAS[level]
        self._lock = threading.Lock()  # ``_conn`` is open while set
        self._conn: sqlite3.Connection | None = None
        self._interrupted = False

    def run(self) -> None:
        """Return when the store passes; raise ``StoreDamaged`` when it does not,
        ``StoreUnavailable`` when the check could not run (the file cannot be read)."""
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(describe(exc)) from exc
        # ``Connection.interrupt`` stops the check inside its one long step, but only while the
        # statement runs; an interrupt that came just before it starts is seen by this handler
        # (called between steps: after the check, at worst).
        conn.set_progress_handler(lambda: self._interrupted, 1000)
        try:
            with self._lock:
                self._conn = conn
            if self._interrupted:
                raise CheckInterrupted(self.pragma)
            rows = [row[0] for row in conn.execute(f"PRAGMA {self.pragma}({MAX_PROBLEMS})")]
            if rows == ["ok"] and self.pragma == "integrity_check":
                rows = _compare_keys(conn)
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise damaged(exc, self.path) from exc
            if exc.sqlite_errorcode == sqlite3.SQLITE_INTERRUPT:
                raise CheckInterrupted(self.pragma) from exc
            raise StoreUnavailable(describe(exc)) from exc
        finally:
            with self._lock:
                self._conn = None
                conn.close()
        if rows != ["ok"]:
            raise StoreDamaged(f"{self.pragma}: {summary(rows)}", str(self.path))

    def interrupt(self) -> None:
        with self._lock:
            self._interrupted = True
            if self._conn is not None:
                self._conn.interrupt()


def summary(rows: list[str]) -> str:
    """The first problem a check lists, and how many it listed (a row may hold several lines;
    the "*** in database main ***" heading is not a problem)."""
    problems = [
        line for row in rows for line in row.splitlines() if not line.startswith("*** in database")
    ]
    if len(problems) <= 1:
        return problems[0] if problems else "no detail"
    many = "or more " if len(problems) >= MAX_PROBLEMS else ""
    return f"{problems[0]}; {len(problems)} {many}problems listed"


def _compare_keys(conn: sqlite3.Connection) -> list[str]:
    """The dedup index against the events, in one snapshot: ``["ok"]`` or the problems."""
    conn.create_function("key_hash", 2, key_hash, deterministic=True)
    conn.create_function("bucket_of", 1, bucket_of, deterministic=True)
    conn.execute("BEGIN")
    try:
        (missing,) = conn.execute(MISSING_KEYS).fetchone()
        (wrong,) = conn.execute(WRONG_KEYS).fetchone()
    finally:
        conn.execute("COMMIT")
    problems = []
    if missing:
        problems.append(f"{missing} stored events have no row in the dedup index (keys)")
    if wrong:
        problems.append(f"{wrong} rows of the dedup index (keys) name no event of their hash")
    return problems or ["ok"]
