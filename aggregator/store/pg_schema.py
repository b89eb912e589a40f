"""The PostgreSQL schema: versioned migrations, applied at start-up under an advisory lock.

Every key leads with ``topic`` so the tables can be distributed by topic (Citus
``create_distributed_table('events', 'topic')``; untested). Blocking code only, psycopg 3.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg

from aggregator.store.base import StoreMismatch

LOGGER = logging.getLogger(__name__)

# Advisory lock namespace ("aggr"): (NAMESPACE, 0) guards migrations, (SHARDS_NAMESPACE, i) marks
# the writer that owns counter shard i; the seq allocator's key is derived in aggregator_reserve.
NAMESPACE = 0x61676772
SHARDS_NAMESPACE = NAMESPACE + 1
OWN_TABLES = ("events", "counters", "topics")
# Tables, views, sequences and foreign tables in the schema the store would be created in, but
# not objects of an extension (pg_stat_statements' views, say): those belong to the database.
OTHER_RELATIONS = """SELECT c.relname FROM pg_class c
    WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
          AND d.objid = c.oid AND d.deptype = 'e')"""
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


# MIGRATIONS[i] takes the schema from version i to i + 1, in one transaction.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE aggregator_schema (
            id integer PRIMARY KEY CHECK (id = 1),
            version integer NOT NULL
        )""",
        "INSERT INTO aggregator_schema VALUES (1, 0)",
        # Handed out only by aggregator_reserve, in blocks, under an advisory lock.
        "CREATE SEQUENCE events_seq AS bigint",
        """CREATE TABLE events (
            topic text COLLATE "C" NOT NULL,
            event_id text COLLATE "C" NOT NULL,      -- \\ doubled, NUL as \\0 (escape)
            seq bigint NOT NULL,                      -- commit order across processes
            xid xid8 NOT NULL DEFAULT pg_current_xact_id(),  -- the writing transaction
            timestamp text NOT NULL,
            source text NOT NULL,                     -- escaped like event_id
            payload text NOT NULL,                    -- the JSON text as received
            received_at text NOT NULL,
            PRIMARY KEY (topic, event_id)             -- the unique key: decides what is a duplicate
        )""",
        "CREATE INDEX events_by_seq ON events (seq)",
        "CREATE INDEX events_by_topic ON events (topic, seq)",
        # Counters are sharded: each writer process owns one shard (an advisory lock), so
        # processes never wait on each other's counter rows; readers sum the shards.
        """CREATE TABLE counters (
            shard integer PRIMARY KEY,
            received bigint NOT NULL,
            unique_processed bigint NOT NULL,
            duplicate_dropped bigint NOT NULL
        )""",
        """CREATE TABLE topics (
            topic text COLLATE "C" NOT NULL,
            shard integer NOT NULL,
            stored bigint NOT NULL,
            duplicates bigint NOT NULL,
            last_seq bigint NOT NULL,
            PRIMARY KEY (topic, shard)
        )""",
        # Reserve n seqs for this transaction and give it its xid, both under one lock, so that
        # xid order is seq-block order between writers. The lock is held for microseconds
        # (a session lock, released here), not until COMMIT. It must be the first statement of a
        # writer transaction that assigns an xid.
        f"""CREATE FUNCTION aggregator_reserve(n bigint) RETURNS bigint
        LANGUAGE plpgsql AS $$
        DECLARE
            lock_key constant bigint :=
                ({NAMESPACE}::bigint << 32) | 'events_seq'::regclass::oid::bigint;
            first_seq bigint;
        BEGIN
            PERFORM pg_advisory_lock(lock_key);
            PERFORM pg_current_xact_id();
            first_seq := nextval('events_seq');
            IF n > 1 THEN
                PERFORM setval('events_seq', first_seq + n - 1);
            END IF;
            PERFORM pg_advisory_unlock(lock_key);
            RETURN first_seq;
        END $$""",
    ],
    [
        # Retention (AGGREGATOR_RETENTION_SECONDS): events deleted, per shard and per topic.
        "ALTER TABLE counters ADD COLUMN expired bigint NOT NULL DEFAULT 0",
        "ALTER TABLE topics ADD COLUMN expired bigint NOT NULL DEFAULT 0",
    ],
    [
        # Search (AGGREGATOR_SEARCH, pg_search.py): each event's words, NULL while not indexed
        # (a partial index finds those for upkeep to index), and the filters' indexes.
        "ALTER TABLE events ADD COLUMN search tsvector",
        "CREATE INDEX events_search ON events USING gin (search)",
        "CREATE INDEX events_unindexed ON events (seq) WHERE search IS NULL",
        'CREATE INDEX events_by_time ON events ((timestamp COLLATE "C"))',
        "CREATE INDEX events_by_source ON events (source, seq)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: psycopg.Connection[Any], where: str) -> int:
    """The database's schema version; refuses a newer schema or another program's tables."""
    row = conn.execute("SELECT to_regclass('aggregator_schema') IS NOT NULL").fetchone()
    if row is not None and row[0]:
        version = conn.execute("SELECT version FROM aggregator_schema").fetchone()
        current = int(version[0]) if version else 0
    else:
        _check_empty(conn, where)
        current = 0
    if current > SCHEMA_VERSION:
        raise StoreMismatch(
            f"{where} has schema version {current}, newer than this aggregator's "
            f"{SCHEMA_VERSION}; upgrade the aggregator"
        )
    return current


def _check_empty(conn: psycopg.Connection[Any], where: str) -> None:
    """Before creating the store: the schema it goes into holds no other program's tables (as
    with SQLite, a database of another program is refused, not shared), and no table of the
    search_path has one of the store's names (it would be read instead of the store's own)."""
    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise StoreMismatch(
            f"{where}: no schema of the search_path exists to create the store in; "
            "create it first (CREATE SCHEMA …) or fix the URL's search_path"
        )
    found = {name for (name,) in conn.execute(OTHER_RELATIONS)}
    found.update(
        name
        for name in OWN_TABLES
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone() == (True,)
    )
    if found:
        names = sorted(found)
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise StoreMismatch(
            f"{where} has tables {listed} but no aggregator schema (another program's?); use an "
            "empty database, or a schema of the store's own (?options=-csearch_path%3Dmyschema)"
        )


def migrate(conn: psycopg.Connection[Any], where: str) -> None:
    """Bring the schema up to date. Processes starting together wait on one advisory lock,
    and each re-reads the version under it, so exactly one of them migrates."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (NAMESPACE,))
        version = schema_version(conn, where)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target - 1]:
                conn.execute(statement)
            conn.execute("UPDATE aggregator_schema SET version = %s", (target,))
            if version:  # a new store is one transaction: one line, as SQLite's says
                LOGGER.info("migrated %s to schema version %d", where, target)
        if not version:
            LOGGER.info("created %s at schema version %d", where, SCHEMA_VERSION)
