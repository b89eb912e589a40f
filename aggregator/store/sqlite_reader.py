"""Read-only connections to the SQLite store: WAL readers see the last commit and never block
the writer. Each is used by one thread at a time (the reader pool sees to that)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aggregator.messages import StoredEvent
from aggregator.store import sqlite_search
from aggregator.store.base import Counters, StoreDamaged, StoreUnavailable, TopicCounts
from aggregator.store.query import EventQuery
from aggregator.store.search import QuerySyntaxError

EVENT_COLUMNS = "seq, topic, event_id, timestamp, source, payload, received_at"
# A read is interrupted after this long, as PostgreSQL's readers are (pg_connect.READ_TIMEOUT):
# a cancelled request's read holds its connection until the read ends, so none may run for ever.
READ_TIMEOUT_SECONDS = 10.0
PROGRESS_STEPS = 10_000  # SQLite virtual machine steps between two looks at the clock
# The primary result codes that say the file itself is damaged (extended codes such as
# SQLITE_CORRUPT_INDEX share them in their low byte): no retry can help.
DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def wal_path(path: Path) -> Path:
    """Where SQLite keeps the file's WAL: beside the file a symlink points to, not the link."""
    real = Path(os.path.realpath(path))
    return real.with_name(real.name + "-wal")


def describe(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


def is_damage(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in DAMAGE_CODES


def damaged(exc: sqlite3.Error, path: Path) -> StoreDamaged:
    return StoreDamaged(describe(exc), str(path))


@contextmanager
def reading(path: Path, reader: SQLiteReader | None = None) -> Iterator[None]:
    """SQLite errors as the store's: ``StoreDamaged`` (fatal) or ``StoreUnavailable``; with
    ``reader``, its read is interrupted after ``READ_TIMEOUT_SECONDS``."""
    if reader is not None:
        reader.deadline = time.monotonic() + READ_TIMEOUT_SECONDS
    try:
        yield
    except sqlite3.Error as exc:
        if reader is not None and exc.sqlite_errorcode == sqlite3.SQLITE_INTERRUPT:
            raise StoreUnavailable(
                f"the read took longer than {READ_TIMEOUT_SECONDS:g} s, the limit of a read; "
                "ask for less (a smaller limit or offset, a topic)"
            ) from exc
        if is_damage(exc):
            raise damaged(exc, path) from exc
        raise StoreUnavailable(describe(exc)) from exc


class SQLiteReader:
    """A read-only connection. WAL readers see the last commit and never block the writer."""

    def __init__(self, path: Path, *, search: bool = False) -> None:
        self._path = path
        self._search = search
        self._conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        self.deadline = float("inf")  # of the read under way; each read sets it
        self._conn.set_progress_handler(self._overdue, PROGRESS_STEPS)
        # SQLite opens the WAL and its shared memory at a connection's first read. Out of
        # descriptors then, every read (and /health) was 503 "unable to open database file",
        # for as long as that lasted, while the store was sound: opened now, with the reader.
        with reading(path, self):
            self._conn.execute("PRAGMA schema_version").fetchone()

    def _overdue(self) -> bool:
        """True interrupts the statement; once per read: SQLite's step counts add up across
        statements, so the ``COMMIT`` after an interrupted read was now and then interrupted too
        (3 in 10,000), which left the reader in its transaction and failed every read after."""
        if time.monotonic() <= self.deadline:
            return False
        self.deadline = float("inf")
        return True

    def _commit(self) -> None:
        """End a read's transaction, never interrupted: a read whose query ended just inside its
        limit had the limit's first interrupt in its ``COMMIT``, which left the reader in its
        transaction and failed every read after on it."""
        self.deadline = float("inf")
        self._conn.execute("COMMIT")

    def events(self, topic: str | None, after: int, limit: int, offset: int) -> list[StoredEvent]:
        with reading(self._path, self):
            return self._events(topic, after, limit, offset)

    def _events(self, topic: str | None, after: int, limit: int, offset: int) -> list[StoredEvent]:
        if topic is None:
            rows = self._conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ? OFFSET ?",
                (after, limit, offset),
            )
        else:
            rows = self._conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE topic = ? AND seq > ? "
                "ORDER BY seq LIMIT ? OFFSET ?",
                (topic, after, limit, offset),
            )
        return [StoredEvent(*row) for row in rows]

    def find(self, query: EventQuery) -> list[StoredEvent]:
        """A page of events by every filter of ``query`` (``sqlite_search.py``)."""
        with reading(self._path, self):
            # One read transaction: the index's reach and the page from the same snapshot.
            self._conn.execute("BEGIN")
            try:
                if query.search is not None:
                    sqlite_search.check_ready(self._conn, self._search)
                return sqlite_search.find(self._conn, query)
            except sqlite3.OperationalError as exc:
                if str(exc).startswith("fts5:"):  # never expected: search.py quotes every word
                    raise QuerySyntaxError(f"q cannot be searched: {exc}") from exc
                raise
            finally:
                self._commit()

    def counters(self) -> Counters:
        with reading(self._path, self):
            return self._counters()

    def _counters(self) -> Counters:
        # One read transaction: the counters and the topic list come from the same snapshot.
        self._conn.execute("BEGIN")
        try:
            received, unique, duplicates, expired = self._conn.execute(
                "SELECT received, unique_processed, duplicate_dropped, expired FROM counters"
            ).fetchone()
            topics = [
                t
                for (t,) in self._conn.execute(
                    "SELECT topic FROM topics WHERE stored > expired ORDER BY topic"
                )
            ]
        finally:
            self._commit()
        return Counters(received, unique, duplicates, topics, expired)

    def topics(self) -> list[TopicCounts]:
        with reading(self._path, self):
            return [
                TopicCounts(*row)
                for row in self._conn.execute(
                    "SELECT topic, stored, duplicates, last_seq, expired FROM topics ORDER BY topic"
                )
            ]

    def head(self) -> int:
        with reading(self._path, self):
            (head,) = self._conn.execute("SELECT last_seq FROM counters").fetchone()
        return int(head)

    def ping(self) -> None:
        with reading(self._path, self):
            self._conn.execute("SELECT 1 FROM counters").fetchone()

    def size_bytes(self) -> int:
        """The database file and its WAL."""
        return sum(p.stat().st_size for p in (self._path, wal_path(self._path)) if p.exists())

    def close(self) -> None:
        self._conn.close()
