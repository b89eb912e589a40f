"""The SQLite schema: the current one for a new file, and forward migrations for older files.

A new file gets ``SCHEMA`` and ``user_version = SCHEMA_VERSION`` in one transaction. A file at
version ``v`` runs ``MIGRATIONS[v]``, ``MIGRATIONS[v + 1]``, … each in its own transaction; a
step is an SQL statement or a function of the connection. ``tests/test_store_schema.py`` checks
that a migrated file and a new one have the same tables, columns and indexes.

The dedup index (version 3) is a compact ``WITHOUT ROWID`` table of 64-bit hashes of
``(topic, event_id)`` beside an append-only events table: a random key then dirties a page of a
table of 16-byte rows instead of one of ~80-byte rows (the old ``UNIQUE (topic, event_id)``), so
more of it stays cached and fewer pages are written per event. A hash only finds candidates: an
event is a duplicate when a candidate's stored row has the same topic and event_id, never because
two hashes are equal.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from aggregator.store.base import StoreMismatch

LOGGER = logging.getLogger(__name__)
BUCKETS = 64  # of recent keys, see sqlite_keys.py
# The file's header names its program (``PRAGMA application_id``), so a database of another
# program is told apart before anything writes to it. "AgGr" in ASCII.
APPLICATION_ID = 0x41674772
# Versions 1 and 2 predate APPLICATION_ID: their tables are their identity.
LEGACY_TABLES = {1: {"events", "counters", "topics"}, 2: {"events", "counters", "topics", "probe"}}

KeyHash: TypeAlias = Callable[[str, str], int]
Step: TypeAlias = "str | Callable[[sqlite3.Connection], None]"


def key_hash(topic: str, event_id: str) -> int:
    """A signed 64-bit hash of the key. A topic has no control characters, so the NUL between
    the two parts cannot be part of the topic and the encoding is unambiguous."""
    data = f"{topic}\0{event_id}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


EVENTS = """CREATE TABLE events (
    seq INTEGER PRIMARY KEY,   -- commit order, never reused (counters.last_seq): cursors stay valid
    topic TEXT NOT NULL,
    event_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    source TEXT NOT NULL,
    payload TEXT NOT NULL,     -- the JSON text as received
    received_at TEXT NOT NULL
)"""
EVENTS_BY_TOPIC = "CREATE INDEX events_by_topic ON events (topic, seq)"
# Version 4, search (docs/search.md): the filters' indexes, the full-text index of each event's
# words (``search.py``; its own copy of them, so retention deletes by rowid range), and how far
# the full-text index reaches: every event with seq <= upto is in it.
SEARCH_SCHEMA: list[str] = [
    "CREATE INDEX events_by_time ON events (timestamp)",
    "CREATE INDEX events_by_source ON events (source, seq)",
    """CREATE VIRTUAL TABLE events_fts USING fts5(
        words, tokenize = 'ascii', columnsize = 0)""",
    """CREATE TABLE search (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        upto INTEGER NOT NULL       -- events with seq <= upto are in events_fts (or deleted)
    )""",
]
KEYS = """CREATE TABLE keys (
    h INTEGER NOT NULL,        -- key_hash(topic, event_id)
    seq INTEGER NOT NULL,      -- the event stored under it; rows below the first stored seq are
    PRIMARY KEY (h, seq)       -- keys of expired events, ignored, swept in steps
) WITHOUT ROWID"""
# Per bucket of recent keys (sqlite_keys.py): up to which seq its keys are in ``keys``.
MERGED = """CREATE TABLE merged (
    bucket INTEGER PRIMARY KEY,
    upto INTEGER NOT NULL,     -- the keys of this bucket's events up to this seq are in keys
    swept INTEGER NOT NULL     -- counters.expired when its keys of expired events were deleted
)"""
FILL_MERGED = f"""WITH RECURSIVE b(n) AS (
        SELECT 0 UNION ALL SELECT n + 1 FROM b WHERE n < {BUCKETS - 1})
    INSERT INTO merged SELECT n, (SELECT last_seq FROM counters), 0 FROM b"""

SCHEMA: list[str] = [
    f"PRAGMA application_id = {APPLICATION_ID}",
    EVENTS,
    EVENTS_BY_TOPIC,
    KEYS,
    """CREATE TABLE counters (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        received INTEGER NOT NULL,
        unique_processed INTEGER NOT NULL,
        duplicate_dropped INTEGER NOT NULL,
        expired INTEGER NOT NULL DEFAULT 0,     -- events deleted by retention
        last_seq INTEGER NOT NULL DEFAULT 0     -- the largest seq ever given
    )""",
    "INSERT INTO counters (id, received, unique_processed, duplicate_dropped) VALUES (1, 0, 0, 0)",
    """CREATE TABLE topics (
        topic TEXT PRIMARY KEY,
        stored INTEGER NOT NULL,
        duplicates INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        expired INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    # Scratch space for the writer's health probe (SQLiteStore.probe); empty at rest.
    "CREATE TABLE probe (id INTEGER PRIMARY KEY, filler BLOB NOT NULL)",
    MERGED,
    FILL_MERGED,
    *SEARCH_SCHEMA,
    "INSERT INTO search (id, upto) VALUES (1, 0)",
]


def _rebuild_events_with_key_hashes(conn: sqlite3.Connection) -> None:
    """Version 2 → 3: events without the UNIQUE index, and the hash table in its place.

    SQLite cannot drop a UNIQUE constraint, so the events are copied in seq order (appends),
    and the indexes are built once at the end, sorted, which is faster than row by row."""
    conn.create_function("key_hash", 2, key_hash, deterministic=True)
    conn.execute("ALTER TABLE events RENAME TO events_v2")
    conn.execute("DROP INDEX events_by_topic")
    conn.execute(EVENTS)
    conn.execute(
        "INSERT INTO events SELECT seq, topic, event_id, timestamp, source, payload, received_at "
        "FROM events_v2 ORDER BY seq"
    )
    conn.execute("DROP TABLE events_v2")
    conn.execute(EVENTS_BY_TOPIC)
    conn.execute(KEYS)
    conn.execute("INSERT INTO keys SELECT key_hash(topic, event_id), seq FROM events ORDER BY 1, 2")


# MIGRATIONS[v] takes a file from user_version v to v + 1, in one transaction.
MIGRATIONS: list[list[Step]] = [
    [],  # 0 → 1: never run, a new file is created at SCHEMA_VERSION in one step (``migrate``)
    ["CREATE TABLE probe (id INTEGER PRIMARY KEY, filler BLOB NOT NULL)"],  # 1 → 2
    [  # 2 → 3: the dedup index of key hashes; retention's counters; the file names its program
        f"PRAGMA application_id = {APPLICATION_ID}",
        _rebuild_events_with_key_hashes,
        "ALTER TABLE counters ADD COLUMN expired INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE counters ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0",
        "UPDATE counters SET last_seq = (SELECT coalesce(max(seq), 0) FROM events)",
        "ALTER TABLE topics ADD COLUMN expired INTEGER NOT NULL DEFAULT 0",
        MERGED,
        FILL_MERGED,
    ],
    [  # 3 → 4: search; the full-text index is built by upkeep steps once search is turned on
        *SEARCH_SCHEMA,
        "INSERT INTO search (id, upto) VALUES (1, 0)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def _run(conn: sqlite3.Connection, steps: list[Step], version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in steps:
            if isinstance(step, str):
                conn.execute(step)
            else:
                step(conn)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def identify(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version, read on a read-only connection before anything may write to
    it; refuses a newer schema and another program's database (``StoreMismatch``)."""
    application = conn.execute("PRAGMA application_id").fetchone()[0]
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    foreign = StoreMismatch(
        f"{path} is an SQLite database of another program (application_id {application:#x}, "
        f"user_version {version}, tables: {', '.join(sorted(tables)) or 'none'}); point "
        "--data-dir elsewhere"
    )
    if application not in (0, APPLICATION_ID):
        raise foreign
    if application == APPLICATION_ID and version > SCHEMA_VERSION:
        raise StoreMismatch(
            f"{path} has schema version {version}, newer than this aggregator's "
            f"{SCHEMA_VERSION}; upgrade the aggregator"
        )
    if version == 0 and tables:
        raise foreign
    if application == 0 and version and LEGACY_TABLES.get(version) != tables:
        raise foreign  # not one of ours from before the header named us
    return version


def migrate(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Bring the file from ``version`` to ``SCHEMA_VERSION``; a new file (0) in one step."""
    if version == 0:
        _run(conn, list(SCHEMA), SCHEMA_VERSION)
        LOGGER.info("created %s at schema version %d", path, SCHEMA_VERSION)
        return
    for target in range(version + 1, SCHEMA_VERSION + 1):
        _run(conn, MIGRATIONS[target - 1], target)
        LOGGER.info("migrated %s to schema version %d", path, target)
    if version < SCHEMA_VERSION:  # a migration may have written the whole store to the WAL:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # into the file now, not on a commit
