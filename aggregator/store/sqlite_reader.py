"""Read-only connections to the SQLite store: WAL readers see the last commit and never block
the writer. Each is used by one thread at a time (the reader pool sees to that)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aggregator.messages import StoredEvent
from aggregator.store import sqlite_search
from aggregator.store.base import Counters, StoreUnavailable, TopicCounts
from aggregator.store.query import EventQuery
from aggregator.store.search import QuerySyntaxError

EVENT_COLUMNS = "seq, topic, event_id, timestamp, source, payload, received_at"


def describe(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


@contextmanager
def _reading() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
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

    def events(self, topic: str | None, after: int, limit: int, offset: int) -> list[StoredEvent]:
        with _reading():
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
        with _reading():
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
                self._conn.execute("COMMIT")

    def counters(self) -> Counters:
        with _reading():
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
            self._conn.execute("COMMIT")
        return Counters(received, unique, duplicates, topics, expired)

    def topics(self) -> list[TopicCounts]:
        with _reading():
            return [
                TopicCounts(*row)
                for row in self._conn.execute(
                    "SELECT topic, stored, duplicates, last_seq, expired FROM topics ORDER BY topic"
                )
            ]

    def head(self) -> int:
        with _reading():
            (head,) = self._conn.execute("SELECT last_seq FROM counters").fetchone()
        return int(head)

    def ping(self) -> None:
        with _reading():
            self._conn.execute("SELECT 1 FROM counters").fetchone()

    def size_bytes(self) -> int:
        """The database file and its WAL."""
        return sum(
            p.stat().st_size
            for p in (self._path, self._path.with_name(self._path.name + "-wal"))
            if p.exists()
        )

    def close(self) -> None:
        self._conn.close()
