"""A read connection of the PostgreSQL store (autocommit: one statement, one snapshot).

Reads are limited in time (``statement_timeout``, pg_connect.READ_TIMEOUT). A connection found
lost (PostgreSQL restarted, the session terminated) is replaced and the read retried once on the
fresh one: a read changes nothing, so retrying it is safe, and a restart then costs no reader a
503. Only a second failure, or a failure on a live connection, is answered 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from aggregator.messages import StoredEvent
from aggregator.store import pg_connect, pg_search
from aggregator.store.base import Counters, StoreMismatch, StoreUnavailable, TopicCounts
from aggregator.store.pg_connect import connect_reader, describe
from aggregator.store.pg_schema import unescape
from aggregator.store.query import EventQuery

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

EVENT_COLUMNS = "seq, topic, event_id, timestamp, source, payload, received_at"
# Only rows of transactions older than every transaction still running (see postgres.py).
VISIBLE = "xid < pg_snapshot_xmin(pg_current_snapshot())"
COUNTERS = """SELECT coalesce(sum(received), 0)::bigint, coalesce(sum(unique_processed), 0)::bigint,
    coalesce(sum(duplicate_dropped), 0)::bigint,
    ARRAY(SELECT topic FROM topics GROUP BY topic HAVING sum(stored) > sum(expired)
        ORDER BY topic),
    coalesce(sum(expired), 0)::bigint
    FROM counters"""
TOPICS = """SELECT topic, sum(stored)::bigint, sum(duplicates)::bigint, max(last_seq),
    sum(expired)::bigint FROM topics GROUP BY topic ORDER BY topic"""


class PostgresReader:
    """One read connection, used by one thread at a time; reconnects after a failure."""

    def __init__(self, url: str, *, search: bool = False) -> None:
        self.url = url
        self._search = search
        self._conn: psycopg.Connection[Any] | None = connect_reader(url)

    def _open(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            try:
                self._conn = connect_reader(self.url)
            except StoreMismatch as exc:  # the database was replaced under us
                raise StoreUnavailable(str(exc)) from exc
        return self._conn

    def _lost(self) -> bool:
        """Whether the connection is gone (then it is dropped, for a fresh one next time)."""
        conn = self._conn
        if conn is None or not (conn.broken or conn.closed):
            return False
        conn.close()
        self._conn = None
        return True

    def _read(self, query: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            return query(self._open())
        except psycopg.Error as exc:
            if not self._lost():
                raise StoreUnavailable(_failed(exc)) from exc
            LOGGER.info("a read connection was lost (%s); retrying on a new one", describe(exc))
        try:
            return query(self._open())
        except psycopg.Error as exc:
            self._lost()
            raise StoreUnavailable(_failed(exc)) from exc

    def events(self, topic: str | None, after: int, limit: int, offset: int) -> list[StoredEvent]:
        if topic is not None and "\x00" in topic:
            return []  # no topic holds NUL (the contract forbids control characters)

        def query(conn: psycopg.Connection[Any]) -> list[StoredEvent]:
            if topic is None:
                rows = conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > %s AND {VISIBLE} "
                    "ORDER BY seq LIMIT %s OFFSET %s",
                    (after, limit, offset),
                )
            else:
                rows = conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE topic = %s AND seq > %s "
                    f"AND {VISIBLE} ORDER BY seq LIMIT %s OFFSET %s",
                    (topic, after, limit, offset),
                )
            return [
                StoredEvent(seq, topic_, unescape(event_id), timestamp, unescape(source), *rest)
                for seq, topic_, event_id, timestamp, source, *rest in rows
            ]

        return self._read(query)

    def find(self, query: EventQuery) -> list[StoredEvent]:
        """A page of events by every filter of ``query`` (``pg_search.py``)."""

        def read(conn: psycopg.Connection[Any]) -> list[StoredEvent]:
            if query.search is None:
                return pg_search.find(conn, query)
            # q takes several statements (pg_search.find): one snapshot for all, or an event
            # committed between them is missed by the page and skipped by its cursor.
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                pg_search.check_ready(conn, self._search)
                return pg_search.find(conn, query)

        return self._read(read)

    def counters(self) -> Counters:
        row = self._read(lambda conn: conn.execute(COUNTERS).fetchone())
        received, unique, duplicates, topics, expired = row  # type: ignore[misc]
        return Counters(received, unique, duplicates, topics, expired)

    def topics(self) -> list[TopicCounts]:
        return self._read(lambda conn: [TopicCounts(*row) for row in conn.execute(TOPICS)])

    def head(self) -> int:
        # Below the horizon only: a row above it may still be joined by a smaller seq.
        row = self._read(
            lambda conn: conn.execute(f"SELECT max(seq) FROM events WHERE {VISIBLE}").fetchone()
        )
        return int(row[0] or 0) if row else 0

    def ping(self) -> None:
        self._read(lambda conn: conn.execute("SELECT 1 FROM counters LIMIT 1").fetchall())

    def size_bytes(self) -> int:
        row = self._read(
            lambda conn: conn.execute("SELECT pg_database_size(current_database())").fetchone()
        )
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _failed(exc: psycopg.Error) -> str:
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return f"{describe(exc)}: reads are limited to {pg_connect.READ_TIMEOUT}"
    return describe(exc)
