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
import secrets
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from aggregator.messages import EventRecord
from aggregator.store import pg_search
from aggregator.store.base import (
    Clock,
    CommitResult,
    Retention,
    StoreBroken,
    StoreContention,
    StoreMismatch,
    StoreUnavailable,
    Upkeep,
    commit_result,
    utc_now,
    utc_text,
)
from aggregator.store.pg_connect import connect_writer, describe, redact
from aggregator.store.pg_reader import PostgresReader
from aggregator.store.pg_schema import (
    NAMESPACE,
    SCHEMA_VERSION,
    SHARDS_NAMESPACE,
    escape,
    migrate,
    schema_version,
)

__all__ = ["PostgresReader", "PostgresStore", "redact"]

LOGGER = logging.getLogger(__name__)

SHARDS = 16  # counter shards; more live writers than this share shards (waits, never wrong)
INSERT_EVENTS = """INSERT INTO events
    (seq, topic, event_id, timestamp, source, payload, received_at, search)
    SELECT u.seq, u.topic, u.event_id, u.ts, u.source, u.payload, %s, u.words::tsvector
    FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
        %s::text[]) AS u(seq, topic, event_id, ts, source, payload, words)
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
# A lock wait that ran out (lock_timeout) or a deadlock: the transaction met a lock held elsewhere.
LOCK_FAILURES = ("55P03", "40P01")
# After a lock wait ran out: is the lock one that every transaction needs (a table lock, or a
# waiting one, in a mode that blocks INSERT; the seq allocator's advisory lock), rather than one
# key's or one topic's row? Held or awaited by another session, now.
STORE_WIDE_LOCK = """SELECT EXISTS (SELECT 1 FROM pg_locks
    WHERE pid <> pg_backend_pid()
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND ((locktype = 'relation' AND relation = ANY (ARRAY[to_regclass('events'),
              to_regclass('counters'), to_regclass('topics'), to_regclass('events_seq')]::oid[])
            AND mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock',
                'AccessExclusiveLock'))
        OR (locktype = 'advisory' AND granted AND classid = %s::oid
            AND objid = to_regclass('events_seq')::oid AND objsubid = 1)))"""
# The oldest events (by seq) received before the cutoff; another process may delete the same
# rows at once: only the rows this statement deleted come back, so none is counted twice.
EXPIRE = """DELETE FROM events WHERE (topic, event_id) IN (
        SELECT topic, event_id FROM (
            SELECT topic, event_id, received_at FROM events ORDER BY seq LIMIT %s
            FOR UPDATE SKIP LOCKED) AS oldest
        WHERE received_at < %s)
    RETURNING topic"""
ADD_EXPIRED = """INSERT INTO counters AS c VALUES (%s, 0, 0, 0, %s)
    ON CONFLICT (shard) DO UPDATE SET expired = c.expired + excluded.expired"""
ADD_TOPICS_EXPIRED = """INSERT INTO topics AS t
    SELECT u.topic, %s, 0, 0, 0, u.expired
    FROM unnest(%s::text[], %s::bigint[]) AS u(topic, expired)
    ON CONFLICT (topic, shard) DO UPDATE SET expired = t.expired + excluded.expired"""
# A probe's row: a control character, so no event can have this topic; deleted before COMMIT.
PROBE_TOPIC = "\x1faggregator-probe"
PROBE = """INSERT INTO events (topic, event_id, seq, timestamp, source, payload, received_at)
    VALUES (%s, pg_backend_pid()::text, 0, '', '', %s, '')"""


class PostgresStore:
    """The write connection of this process. Opening it migrates the schema."""

    def __init__(self, url: str, *, clock: Clock = utc_now, search: bool = False) -> None:
        self.url = url
        self.search = search  # keep each event's words (pg_search.py)
        self.where = redact(url)
        self._clock = clock
        self._conn: psycopg.Connection[Any] | None = None
        conn = connect_writer(url)
        try:
            migrate(conn, self.where)
            self._adopt(conn)
        except BaseException:
            conn.close()
            raise

    def _adopt(self, conn: psycopg.Connection[Any]) -> None:
        """Take a counter shard: the first free one, else one shared by pid (waits, not errors)."""
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
        try:
            conn = connect_writer(self.url)
        except StoreMismatch as exc:  # the database was replaced by one we cannot use
            raise StoreBroken(str(exc)) from exc
        try:
            version = schema_version(conn, self.where)
            if version != SCHEMA_VERSION:
                raise StoreBroken(
                    f"{self.where} has schema version {version}, not {SCHEMA_VERSION}"
                )
            self._adopt(conn)
        except psycopg.Error as exc:
            conn.close()
            raise StoreUnavailable(describe(exc)) from exc
        except StoreBroken:
            conn.close()
            raise
        except Exception as exc:
            conn.close()
            raise StoreBroken(str(exc)) from exc
        LOGGER.info("reconnected to %s (counter shard %d)", self.where, self.shard)
        return conn

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        with self.transaction():
            return self.write(batches)

    def probe(self, reserve_bytes: int) -> None:
        """A real write, undone before COMMIT: the seq lock, ``reserve_bytes`` of incompressible
        text in ``events`` (its locks, and room in its table and WAL) and this writer's counter
        row, then COMMIT, as a group commit needs them. An empty transaction only showed that
        the server answers, while a table lock or a full disk still failed every write."""
        with self.transaction():
            conn = self._connection()
            conn.execute("SELECT aggregator_reserve(1)")
            conn.execute(PROBE, (PROBE_TOPIC, secrets.token_hex(max(reserve_bytes // 2, 1))))
            conn.execute(
                "DELETE FROM events WHERE topic = %s AND event_id = pg_backend_pid()::text",
                (PROBE_TOPIC,),
            )
            conn.execute("UPDATE counters SET received = received WHERE shard = %s", (self.shard,))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction: COMMIT at the end of the block, ROLLBACK if it raises. ``commit`` is
        ``write`` inside this; tests use the halves to hold a transaction open.

        Whatever the block raises, no transaction is left open: a connection that is not idle
        after psycopg's rollback (which only warns when it fails) is closed, and the server
        rolls back. A failed statement raises ``StoreUnavailable`` (``StoreContention`` when it
        met a lock on a row that others need not wait for); anything else propagates."""
        conn = self._connection()
        committing = False
        try:
            with conn.transaction():
                yield
                committing = True  # the block is done: what fails now is COMMIT itself
        except psycopg.Error as exc:
            contention = exc.sqlstate in LOCK_FAILURES and not self._store_wide_lock(conn)
            # A fresh connection next time: a broken one cannot be reused, and a statement
            # that failed inside aggregator_reserve may have left its session lock held.
            self._drop(conn)
            if contention:
                raise StoreContention(describe(exc)) from exc
            # A connection lost during COMMIT leaves its outcome unknown to us: the server may
            # have committed before the answer was lost.
            raise StoreUnavailable(describe(exc), maybe_stored=committing) from exc
        except BaseException:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                self._drop(conn)
            raise

    def _store_wide_lock(self, conn: psycopg.Connection[Any]) -> bool:
        """After a lock wait ran out: whether every transaction would wait on that lock (a
        table's, the seq allocator's, this writer's counter row), not only this one's keys."""
        try:
            row = conn.execute(STORE_WIDE_LOCK, (NAMESPACE,)).fetchone()
            if row is None or row[0]:
                return True
            with conn.transaction():
                conn.execute(
                    "SELECT 1 FROM counters WHERE shard = %s FOR UPDATE NOWAIT", (self.shard,)
                )
        except psycopg.Error:
            return True  # locked, or we cannot tell: do not retry request by request
        return False

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = None
        conn.close()

    def write(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        """Insert ``batches`` (first copy wins), add the counters; inside ``transaction()``."""
        conn = self._connection()
        received_at = utc_text(self._clock())
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
        words: list[str | None] = [None] * len(ordered)  # not indexed: search is off
        if self.search:
            words[:] = pg_search.words_column(
                [r.event_id for _, r in ordered], [r.payload for _, r in ordered]
            )
        columns.append(words)
        new = {row[0] for row in conn.execute(INSERT_EVENTS, (received_at, *columns))}
        return self._count(conn, batches, first, new)

    def _count(
        self,
        conn: psycopg.Connection[Any],
        batches: Sequence[Sequence[EventRecord]],
        first: int,
        new: set[int],
    ) -> CommitResult:
        flags: list[list[bool]] = []
        topics: dict[str, list[int]] = {}  # topic -> [stored, duplicates, last seq]
        seq = first
        for batch in batches:
            request = []
            for record in batch:
                tally = topics.get(record.topic) or topics.setdefault(record.topic, [0, 0, 0])
                stored = seq in new  # RETURNING seq named it: this copy was inserted
                request.append(stored)
                if stored:
                    tally[0] += 1
                    tally[2] = seq
                else:
                    tally[1] += 1
                seq += 1
            flags.append(request)
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
        return commit_result(flags)

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        """Index a chunk of the events stored while search was off, when it is on. Retention by
        age: delete up to ``max_events`` of the oldest events received before
        the cutoff (their keys go with them: the primary key). Size limits are SQLite's only
        (``Config`` refuses them here): PostgreSQL reuses space after VACUUM, not at once."""
        building = False
        if self.search:
            with self.transaction():
                building = pg_search.build_step(self._connection(), max_events)
        if not retention.max_age_seconds:
            return Upkeep(0, more=building)
        cutoff = utc_text(self._clock() - timedelta(seconds=retention.max_age_seconds))
        with self.transaction():
            conn = self._connection()
            topics = Counter(
                topic for (topic,) in conn.execute(EXPIRE, (max_events, cutoff)).fetchall()
            )
            expired = sum(topics.values())
            if expired:
                conn.execute(ADD_EXPIRED, (self.shard, expired))
                names = sorted(topics)
                conn.execute(ADD_TOPICS_EXPIRED, (self.shard, names, [topics[t] for t in names]))
        return Upkeep(expired, more=expired == max_events or building)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
