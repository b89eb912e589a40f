"""The PostgreSQL schema: versioned migrations, applied at start-up under an advisory lock.

Every key leads with ``topic`` so the tables can be distributed by topic (Citus
``create_distributed_table('events', 'topic')``; untested). Blocking code only, psycopg 3.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from aggregator.store.base import StoreMismatch

LOGGER = logging.getLogger(__name__)

# Advisory lock namespace ("aggr"): (NAMESPACE, 0) guards migrations, (SHARDS_NAMESPACE, i) marks
# the writer that owns counter shard i; the seq allocator's key is derived in aggregator_reserve.
NAMESPACE = 0x61676772
SHARDS_NAMESPACE = NAMESPACE + 1
OWN_TABLES = ("events", "counters", "topics")

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
            event_id text COLLATE "C" NOT NULL,      -- \\ doubled, NUL as \\0 (see postgres.py)
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
]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: psycopg.Connection[Any], where: str) -> int:
    """The database's schema version; refuses a newer schema or another program's tables."""
    row = conn.execute("SELECT to_regclass('aggregator_schema') IS NOT NULL").fetchone()
    if row is not None and row[0]:
        version = conn.execute("SELECT version FROM aggregator_schema").fetchone()
        current = int(version[0]) if version else 0
    else:
        clash = [
            name
            for name in OWN_TABLES
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone() == (True,)
        ]
        if clash:
            raise StoreMismatch(
                f"{where} has tables {', '.join(clash)} but no aggregator schema (another "
                "program's?); use another database or schema"
            )
        current = 0
    if current > SCHEMA_VERSION:
        raise StoreMismatch(
            f"{where} has schema version {current}, newer than this aggregator's "
            f"{SCHEMA_VERSION}; upgrade the aggregator"
        )
    return current


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
            LOGGER.info("migrated %s to schema version %d", where, target)
