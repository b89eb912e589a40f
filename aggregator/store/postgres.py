"""The PostgreSQL store: any number of aggregator processes on one database.

Synchronous psycopg 3, no trio: the writer actor runs ``PostgresStore.commit`` on its one thread
(group commit, as with SQLite); each ``PostgresReader`` is used by one thread at a time.

Isolation is READ COMMITTED, set explicitly. The unique key decides duplicates: a concurrent
insert of the same key waits for the other transaction and then does nothing, and counters are
``n = n + x`` on rows locked by the update, so nothing is lost; stricter levels would only turn
those waits into serialization failures to retry. Each read is one statement, so one snapshot.

Paging across processes: rows carry the writing transaction's ``xid``, and seq blocks are handed
out in xid order (``aggregator_reserve``). A reader returns only rows whose ``xid`` is below its
snapshot's xmin: every transaction that could still commit a smaller seq is then finished.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import IsolationLevel

from aggregator.messages import EventRecord, StoredEvent
from aggregator.store.base import (
    CommitResult,
    Counters,
    StoreBroken,
    StoreUnavailable,
    TopicCounts,
)
from aggregator.store.pg_schema import SCHEMA_VERSION, SHARDS_NAMESPACE, migrate, schema_version
from aggregator.store.sqlite import utc_now

LOGGER = logging.getLogger(__name__)

SHARDS = 16  # counter shards; more live writers than this share shards (waits, never wrong)
CONNECT_TIMEOUT_SECONDS = 10
# A writer waits at most this long for a lock (as SQLite's busy_timeout), then answers 503. Waits
# on another aggregator's transaction last one commit; this only cuts waits on foreign locks.
WRITER_LOCK_TIMEOUT = "5s"
INSERT_EVENTS = """INSERT INTO events
    (seq, topic, event_id, timestamp, source, payload, received_at)
    SELECT u.*, %s FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],
        %s::text[]) AS u
    ON CONFLICT (topic, event_id) DO NOTHING
    RETURNING seq"""
ADD_COUNTERS = """INSERT INTO counters AS c VALUES (%s, %s, %s, %s)
    ON CONFLICT (shard) DO UPDATE SET received = c.received + excluded.received,
    unique_processed = c.unique_processed + excluded.unique_processed,
    duplicate_dropped = c.duplicate_dropped + excluded.duplicate_dropped"""
ADD_TOPICS = """INSERT INTO topics AS t
    SELECT u.topic, %s, u.stored, u.duplicates, u.last_seq
    FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[])
        AS u(topic, stored, duplicates, last_seq)
    ON CONFLICT (topic, shard) DO UPDATE SET stored = t.stored + excluded.stored,
    duplicates = t.duplicates + excluded.duplicates,
    last_seq = greatest(t.last_seq, excluded.last_seq)"""
EVENT_COLUMNS = "seq, topic, event_id, timestamp, source, payload, received_at"
# Only rows of transactions older than every transaction still running (see the docstring).
VISIBLE = "xid < pg_snapshot_xmin(pg_current_snapshot())"
COUNTERS = """SELECT coalesce(sum(received), 0)::bigint, coalesce(sum(unique_processed), 0)::bigint,
    coalesce(sum(duplicate_dropped), 0)::bigint,
    ARRAY(SELECT topic FROM topics GROUP BY topic HAVING sum(stored) > 0 ORDER BY topic)
    FROM counters"""
TOPICS = """SELECT topic, sum(stored)::bigint, sum(duplicates)::bigint, max(last_seq)
    FROM topics GROUP BY topic ORDER BY topic"""
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def escape(text: str) -> str:
    """PostgreSQL text cannot hold NUL, which ``event_id`` and ``source`` may contain: store
    ``\\`` as ``\\\\`` and NUL as ``\\0``. Injective, so the unique key still decides."""
    if "\\" in text or "\x00" in text:
        return text.replace("\\", "\\\\").replace("\x00", "\\0")
    return text


def unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPED.sub(lambda m: "\x00" if m.group(1) == "0" else m.group(1), text)


def redact(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def describe(exc: psycopg.Error) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{first} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else first


def connect(url: str, application_name: str) -> psycopg.Connection[Any]:
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,  # transactions are explicit: conn.transaction()
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=application_name,
        )
    except psycopg.Error as exc:
        raise StoreUnavailable(f"cannot connect to {redact(url)}: {describe(exc)}") from exc
    conn.isolation_level = IsolationLevel.READ_COMMITTED
    return conn


class PostgresStore:
    """The write connection of this process. Opening it migrates the schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact(url)
        self._conn: psycopg.Connection[Any] | None = None
        conn = connect(url, "aggregator-writer")
        try:
            migrate(conn, self.where)
        except BaseException:
            conn.close()
            raise
        self._adopt(conn)

    def _adopt(self, conn: psycopg.Connection[Any]) -> None:
        """Take a counter shard: the first free one, else one shared by pid (waits, not errors)."""
        conn.execute(f"SET lock_timeout = '{WRITER_LOCK_TIMEOUT}'")
        for shard in range(SHARDS):
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (SHARDS_NAMESPACE, shard))
            if row.fetchone() == (True,):
                break
        else:
            shard = conn.info.backend_pid % SHARDS
        self.shard = shard
        self._conn = conn

    def _connection(self) -> psycopg.Connection[Any]:
        """The connection, reconnecting after a failure; a newer schema underneath is fatal."""
        if self._conn is not None:
            return self._conn
        conn = connect(self.url, "aggregator-writer")
        try:
            version = schema_version(conn, self.where)
        except psycopg.Error as exc:
            conn.close()
            raise StoreUnavailable(describe(exc)) from exc
        except Exception as exc:
            conn.close()
            raise StoreBroken(str(exc)) from exc
        if version != SCHEMA_VERSION:
            conn.close()
            raise StoreBroken(f"{self.where} has schema version {version}, not {SCHEMA_VERSION}")
        self._adopt(conn)
        LOGGER.info("reconnected to %s (counter shard %d)", self.where, self.shard)
        return conn

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        with self.transaction():
            return self.write(batches)

    def probe(self, reserve_bytes: int) -> None:
        # PostgreSQL reports a full disk on any write; an empty transaction on a fresh
        # connection tests the connection and the server, which is what fails here.
        with self.transaction():
            pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction: COMMIT at the end of the block, ROLLBACK if it raises. ``commit`` is
        ``write`` inside this; tests use the halves to hold a transaction open."""
        conn = self._connection()
        try:
            with conn.transaction():
                yield
        except psycopg.Error as exc:
            # A fresh connection next time: a broken one cannot be reused, and a statement
            # that failed inside aggregator_reserve may have left its session lock held.
            self._conn = None
            conn.close()
            raise StoreUnavailable(describe(exc)) from exc

    def write(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        """Insert ``batches`` (first copy wins), add the counters; inside ``transaction()``."""
        conn = self._connection()
        received_at = utc_now()
        total = sum(len(batch) for batch in batches)
        first: int = conn.execute("SELECT aggregator_reserve(%s)", (total,)).fetchone()[0]  # type: ignore[index]
        # seq = first + position in the transaction, so events keep request order; the first
        # copy of a key within the transaction is the candidate, later copies are duplicates.
        candidates: dict[tuple[str, str], tuple[int, EventRecord]] = {}
        seq = first
        for batch in batches:
            for record in batch:
                candidates.setdefault((record.topic, record.event_id), (seq, record))
                seq += 1
        # Insert in key order: every writer takes the key locks in one global order, so
        # concurrent transactions with overlapping keys wait for each other but never deadlock.
        ordered = [candidates[key] for key in sorted(candidates)]
        columns: list[list[Any]] = [[], [], [], [], [], []]
        for seq, record in ordered:
            for column, value in zip(
                columns,
                (seq, record.topic, escape(record.event_id), record.timestamp,
                 escape(record.source), record.payload),
                strict=True,
            ):  # fmt: skip
                column.append(value)
        new = {row[0] for row in conn.execute(INSERT_EVENTS, (received_at, *columns))}
        return self._count(conn, batches, first, new)

    def _count(
        self,
        conn: psycopg.Connection[Any],
        batches: Sequence[Sequence[EventRecord]],
        first: int,
        new: set[int],
    ) -> CommitResult:
        counts: list[tuple[int, int]] = []
        topics: dict[str, list[int]] = {}  # topic -> [stored, duplicates, last seq]
        seq = first
        for batch in batches:
            added = 0
            for record in batch:
                tally = topics.get(record.topic) or topics.setdefault(record.topic, [0, 0, 0])
                if seq in new:
                    added += 1
                    tally[0] += 1
                    tally[2] = seq
                else:
                    tally[1] += 1
                seq += 1
            counts.append((added, len(batch) - added))
        total = seq - first
        conn.execute(ADD_COUNTERS, (self.shard, total, len(new), total - len(new)))
        names = sorted(topics)
        conn.execute(
            ADD_TOPICS,
            (
                self.shard,
                names,
                [topics[t][0] for t in names],
                [topics[t][1] for t in names],
                [topics[t][2] for t in names],
            ),
        )
        return CommitResult(counts)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresReader:
    """A read connection (autocommit: one statement, one snapshot); reconnects after a failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = connect(url, "aggregator-reader")

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        if self._conn is None:
            self._conn = connect(self.url, "aggregator-reader")
        try:
            yield self._conn
        except psycopg.Error as exc:
            if self._conn.broken or self._conn.closed:
                self._conn.close()
                self._conn = None
            raise StoreUnavailable(describe(exc)) from exc

    def events(self, topic: str | None, after: int, limit: int, offset: int) -> list[StoredEvent]:
        with self._reading() as conn:
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

    def counters(self) -> Counters:
        with self._reading() as conn:
            received, unique, duplicates, topics = conn.execute(COUNTERS).fetchone()  # type: ignore[misc]
        return Counters(received, unique, duplicates, topics)

    def topics(self) -> list[TopicCounts]:
        with self._reading() as conn:
            return [TopicCounts(*row) for row in conn.execute(TOPICS)]

    def head(self) -> int:
        # Below the horizon only: a row above it may still be joined by a smaller seq.
        with self._reading() as conn:
            row = conn.execute(f"SELECT max(seq) FROM events WHERE {VISIBLE}").fetchone()
        return int(row[0] or 0) if row else 0

    def ping(self) -> None:
        with self._reading() as conn:
            conn.execute("SELECT 1 FROM counters LIMIT 1")

    def size_bytes(self) -> int:
        with self._reading() as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
