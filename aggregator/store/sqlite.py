"""The embedded store: SQLite in WAL mode, one write connection, read-only reader connections.

Synchronous code only: the writer actor runs ``SQLiteStore.commit`` on its one thread; each
``SQLiteReader`` is used by one thread at a time (the reader pool sees to that).
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from aggregator.messages import EventRecord, StoredEvent
from aggregator.store.base import (
    CommitResult,
    Counters,
    StoreBroken,
    StoreMismatch,
    StoreUnavailable,
    TopicCounts,
)
from aggregator.store.lock import StoreLock

LOGGER = logging.getLogger(__name__)

# MIGRATIONS[i] takes the schema from user_version i to i + 1, in one transaction.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,           -- commit order; the rowid, so inserts append
            topic TEXT NOT NULL,
            event_id TEXT NOT NULL,
            timestamp TEXT NOT NULL,
            source TEXT NOT NULL,
            payload TEXT NOT NULL,             -- the JSON text as received
            received_at TEXT NOT NULL,
            UNIQUE (topic, event_id)           -- decides what is a duplicate
        )""",
        "CREATE INDEX events_by_topic ON events (topic, seq)",
        """CREATE TABLE counters (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            received INTEGER NOT NULL,
            unique_processed INTEGER NOT NULL,
            duplicate_dropped INTEGER NOT NULL
        )""",
        "INSERT INTO counters VALUES (1, 0, 0, 0)",
        """CREATE TABLE topics (
            topic TEXT PRIMARY KEY,
            stored INTEGER NOT NULL,
            duplicates INTEGER NOT NULL,
            last_seq INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ],
    [
        # Scratch space for the writer's health probe (SQLiteStore.probe); empty at rest.
        "CREATE TABLE probe (id INTEGER PRIMARY KEY, filler BLOB NOT NULL)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

INSERT_EVENT = """INSERT INTO events (topic, event_id, timestamp, source, payload, received_at)
    VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (topic, event_id) DO NOTHING"""
ADD_COUNTERS = """UPDATE counters SET received = received + ?,
    unique_processed = unique_processed + ?, duplicate_dropped = duplicate_dropped + ?"""
ADD_TOPIC = """INSERT INTO topics (topic, stored, duplicates, last_seq) VALUES (?, ?, ?, ?)
    ON CONFLICT (topic) DO UPDATE SET stored = stored + excluded.stored,
    duplicates = duplicates + excluded.duplicates, last_seq = max(last_seq, excluded.last_seq)"""
HEAD = "SELECT coalesce(max(seq), 0) FROM events"
NEW_IN_TOPIC = "SELECT count(*), max(seq) FROM events WHERE topic = ? AND seq > ?"
EVENT_COLUMNS = "seq, topic, event_id, timestamp, source, payload, received_at"
# Pages of WAL before an automatic checkpoint: fewer, larger checkpoints for random keys.
WAL_AUTOCHECKPOINT_PAGES = 10_000


def utc_now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def describe(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


@contextmanager
def _reading() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreUnavailable(describe(exc)) from exc


def _check(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; refuses a newer schema or another program's database."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreMismatch(
            f"{path} has schema version {version}, newer than this aggregator's "
            f"{SCHEMA_VERSION}; upgrade the aggregator"
        )
    if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise StoreMismatch(
            f"{path} is an SQLite database of another program (it has tables "
            "but no aggregator schema); point --data-dir elsewhere"
        )
    return version


def _migrate(conn: sqlite3.Connection, path: Path, version: int) -> None:
    for target in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        for statement in MIGRATIONS[target - 1]:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
        LOGGER.info("migrated %s to schema version %d", path, target)


class SQLiteStore:
    """The only write connection. Opening it checks the file, migrates it and sets WAL."""

    def __init__(self, path: Path, *, synchronous: str = "full", cache_mib: int = 256) -> None:
        self.path = path
        self._lock = StoreLock(path)  # before anything reads or writes the file
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except BaseException:
            self._lock.release()
            raise
        try:
            # Check before anything writes, so a foreign or corrupt file is left as it was.
            version = _check(conn, path)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            conn.execute(f"PRAGMA cache_size = {-cache_mib * 1024}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute("PRAGMA busy_timeout = 5000")
            _migrate(conn, path, version)
        except sqlite3.DatabaseError as exc:
            conn.close()
            self._lock.release()
            raise StoreMismatch(
                f"{path} cannot be opened as the aggregator's store: {describe(exc)}"
            ) from exc
        except BaseException:
            conn.close()
            self._lock.release()
            raise
        self._conn = conn

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        received_at = utc_now()
        counts: list[tuple[int, int]] = []
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            (head,) = cur.execute(HEAD).fetchone()
            for batch in batches:
                # The statement itself says which rows are new: rowcount sums the inserts.
                cur.executemany(INSERT_EVENT, [(*record, received_at) for record in batch])
                counts.append((cur.rowcount, len(batch) - cur.rowcount))
            # This transaction's rows are the ones above the old head (seq only grows); per
            # topic, the index counts them: cheaper than a Python tally per row (see CHANGELOG).
            topics = []
            for topic, sent in Counter(r.topic for batch in batches for r in batch).items():
                new, last = cur.execute(NEW_IN_TOPIC, (topic, head)).fetchone()
                topics.append((topic, new, sent - new, last or 0))
            result = CommitResult(counts)
            total = sum(len(batch) for batch in batches)
            cur.execute(ADD_COUNTERS, (total, result.stored, total - result.stored))
            cur.executemany(ADD_TOPIC, topics)
            cur.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(exc)
            raise StoreUnavailable(describe(exc)) from exc
        except BaseException as exc:  # a bug, or a thread interrupted: never leave it open
            self._rollback(exc)
            raise
        return result

    def _rollback(self, cause: BaseException) -> None:
        try:
            if self._conn.in_transaction:  # SQLite may have rolled back already (e.g. FULL)
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            reason = describe(cause) if isinstance(cause, sqlite3.Error) else repr(cause)
            raise StoreBroken(f"rollback after {reason} failed: {describe(exc)}") from exc

    def probe(self, reserve_bytes: int) -> None:
        """Commit a ``reserve_bytes`` blob, then delete it: both must reach the disk.

        A commit of one small row can fit into space the WAL file already has while a real
        transaction still cannot; writing the size of the one that failed tells them apart.
        The freed pages stay in the file for the next events.
        """
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("INSERT INTO probe (filler) VALUES (zeroblob(?))", (reserve_bytes,))
            self._conn.execute("COMMIT")
            self._conn.execute("DELETE FROM probe")
        except sqlite3.Error as exc:
            self._rollback(exc)
            raise StoreUnavailable(describe(exc)) from exc

    def execute(self, sql: str) -> None:
        """Run one statement on the write connection (pragmas; used by tests to inject faults)."""
        self._conn.execute(sql)

    def close(self) -> None:
        self._conn.close()
        self._lock.release()


class SQLiteReader:
    """A read-only connection. WAL readers see the last commit and never block the writer."""

    def __init__(self, path: Path) -> None:
        self._path = path
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

    def counters(self) -> Counters:
        with _reading():
            return self._counters()

    def _counters(self) -> Counters:
        # One read transaction: the counters and the topic list come from the same snapshot.
        self._conn.execute("BEGIN")
        try:
            received, unique, duplicates = self._conn.execute(
                "SELECT received, unique_processed, duplicate_dropped FROM counters"
            ).fetchone()
            topics = [
                t
                for (t,) in self._conn.execute(
                    "SELECT topic FROM topics WHERE stored > 0 ORDER BY topic"
                )
            ]
        finally:
            self._conn.execute("COMMIT")
        return Counters(received, unique, duplicates, topics)

    def topics(self) -> list[TopicCounts]:
        with _reading():
            return [
                TopicCounts(*row)
                for row in self._conn.execute(
                    "SELECT topic, stored, duplicates, last_seq FROM topics ORDER BY topic"
                )
            ]

    def head(self) -> int:
        with _reading():
            (head,) = self._conn.execute(HEAD).fetchone()
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
