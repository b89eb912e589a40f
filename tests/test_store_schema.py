"""The SQLite store's layout at scale: a new file in one step, the migration of an older file,
the dedup index of hashes (collisions resolved against the stored row), the recent keys."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from aggregator.messages import EventRecord
from aggregator.store.base import Retention
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from aggregator.store.sqlite_keys import BUCKETS, bucket_of, bucket_range
from aggregator.store.sqlite_schema import SCHEMA_VERSION, key_hash

pytestmark = pytest.mark.sqlite_only

# The schema of version 2 exactly as that release created it (git f950203).
VERSION_2 = [
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, event_id TEXT NOT NULL,
        timestamp TEXT NOT NULL, source TEXT NOT NULL, payload TEXT NOT NULL,
        received_at TEXT NOT NULL, UNIQUE (topic, event_id))""",
    "CREATE INDEX events_by_topic ON events (topic, seq)",
    """CREATE TABLE counters (id INTEGER PRIMARY KEY CHECK (id = 1), received INTEGER NOT NULL,
        unique_processed INTEGER NOT NULL, duplicate_dropped INTEGER NOT NULL)""",
    "INSERT INTO counters VALUES (1, 0, 0, 0)",
    """CREATE TABLE topics (topic TEXT PRIMARY KEY, stored INTEGER NOT NULL,
        duplicates INTEGER NOT NULL, last_seq INTEGER NOT NULL) WITHOUT ROWID""",
    "CREATE TABLE probe (id INTEGER PRIMARY KEY, filler BLOB NOT NULL)",
    "PRAGMA user_version = 2",
]


def rec(topic: str, event_id: str, payload: str = "{}") -> EventRecord:
    return EventRecord(topic, event_id, "2026-11-21T10:00:00Z", "src", payload)


def collide(topic: str, event_id: str) -> int:
    """Every key has the same hash: only the stored rows can tell keys apart."""
    return 7


def shape(db: Path) -> dict[str, object]:
    """Tables with their columns (name, type, not null, default, pk) and indexes with theirs."""
    conn = sqlite3.connect(db)
    try:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        tables: dict[str, object] = {
            n: conn.execute(f"SELECT name, type, \"notnull\", dflt_value, pk "
                            f"FROM pragma_table_info('{n}')").fetchall()
            for n in names
        }  # fmt: skip
        indexes = conn.execute(
            "SELECT tbl_name, name, sql IS NULL FROM sqlite_master WHERE type='index' ORDER BY 2"
        ).fetchall()
        rowid = {n: "WITHOUT ROWID" in (conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = ?", (n,)).fetchone()[0] or "")
            for n in names}  # fmt: skip
    finally:
        conn.close()
    return {"tables": tables, "indexes": indexes, "without_rowid": rowid}


def version_2_store(db: Path, events: list[tuple[str, str]]) -> None:
    """A file as version 2 left it, with ``events`` stored and counted."""
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in VERSION_2:
        conn.execute(statement)
    conn.execute("PRAGMA journal_mode = WAL")
    for topic, event_id in events:
        conn.execute(
            "INSERT INTO events (topic, event_id, timestamp, source, payload, received_at) "
            "VALUES (?, ?, '2026-11-21T10:00:00Z', 'src', '{}', '2026-11-21T10:00:01.000000Z')",
            (topic, event_id),
        )
    n = len(events)
    conn.execute("UPDATE counters SET received = ?, unique_processed = ?, duplicate_dropped = 1",
                 (n + 1, n))  # fmt: skip
    conn.execute("INSERT INTO topics SELECT topic, count(*), 0, max(seq) FROM events GROUP BY 1")
    conn.close()


def test_a_new_file_is_created_at_the_current_version_in_one_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aggregator.store.sqlite_schema")
    SQLiteStore(tmp_path / "new.sqlite3").close()
    assert [r.getMessage().split(" at ")[-1] for r in caplog.records] == [
        f"schema version {SCHEMA_VERSION}"
    ]
    assert "migrated" not in caplog.text
    conn = sqlite3.connect(tmp_path / "new.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_version_2_store_migrates_to_the_same_schema_as_a_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old.sqlite3"
    version_2_store(old, [("a", "1"), ("b", "1"), ("a", "2")])
    caplog.set_level(logging.INFO, logger="aggregator.store.sqlite_schema")
    store = SQLiteStore(old)
    assert f"migrated {old} to schema version 3" in caplog.text
    # What was stored is still there, in order, with its counters; its keys still dedup.
    result = store.commit([[rec("a", "1"), rec("b", "2"), rec("a", "2"), rec("c", "1")]])
    assert result.stored_flags == [[False, True, False, True]]
    store.close()
    reader = SQLiteReader(old)
    assert [(e.seq, e.topic, e.event_id) for e in reader.events(None, 0, 10, 0)] == [
        (1, "a", "1"), (2, "b", "1"), (3, "a", "2"), (4, "b", "2"), (5, "c", "1"),
    ]  # fmt: skip
    assert reader.counters() == (8, 5, 3, ["a", "b", "c"], 0)
    assert reader.head() == 5
    new = tmp_path / "new.sqlite3"
    SQLiteStore(new).close()
    assert shape(old) == shape(new)


def test_colliding_hashes_never_drop_a_distinct_event(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db, hash_key=collide, recent_keys=1_000_000)
    # Within one transaction, in the recent keys, and (after reopening) in the index table.
    first = store.commit([[rec("a", "1"), rec("a", "2"), rec("b", "1"), rec("a", "1")]])
    assert first.stored_flags == [[True, True, True, False]]
    second = store.commit([[rec("a", "2"), rec("a", "3")], [rec("b", "1"), rec("b", "2")]])
    assert second.stored_flags == [[False, True], [False, True]]
    store.close()  # merges the recent keys into the table
    assert sqlite3.connect(db).execute("SELECT count(*), min(h), max(h) FROM keys").fetchone() == (
        5, 7, 7,
    )  # fmt: skip
    store = SQLiteStore(db, hash_key=collide)
    third = store.commit([[rec("a", "3"), rec("a", "4"), rec("b", "2"), rec("c", "1")]])
    assert third.stored_flags == [[False, True, False, True]]
    store.close()
    assert SQLiteReader(db).counters() == (12, 7, 5, ["a", "b", "c"], 0)


def test_recent_keys_are_read_back_after_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db)
    store.commit([[rec("a", str(i)) for i in range(100)]])
    # A crash: the connection goes without close() merging the recent keys into the table.
    store._checkpointer.close()
    store._conn.close()
    store._lock.release()  # as the kernel releases a dead process's lock
    assert sqlite3.connect(db).execute("SELECT count(*) FROM keys").fetchone() == (0,)
    store = SQLiteStore(db)
    again = store.commit([[rec("a", str(i)) for i in range(95, 105)]])
    assert again.counts == [(5, 5)]
    store.close()


def test_maintain_merges_buckets_of_recent_keys_into_the_table(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db, recent_keys=50)
    store.commit([[rec("t", str(i)) for i in range(200)]])
    steps = 0
    while store.maintain(Retention(), 100).more:
        steps += 1
    conn = sqlite3.connect(db)
    in_table = conn.execute("SELECT count(*) FROM keys").fetchone()[0]
    upto = dict(conn.execute("SELECT bucket, upto FROM merged").fetchall())
    merged = {b for b, seq in upto.items() if seq == 200}
    # Bucket by bucket until fewer than 50 are left in memory; each merged bucket is marked.
    assert 150 <= in_table < 200 and 0 < steps < BUCKETS
    assert in_table == sum(1 for i in range(200) if bucket_of(key_hash("t", str(i))) in merged)
    assert store.commit([[rec("t", str(i)) for i in range(200)]]).counts == [(0, 200)]
    store.close()


def test_bucket_ranges_cover_the_hashes_without_overlap() -> None:
    ranges = [bucket_range(b) for b in range(BUCKETS)]
    assert sorted(ranges)[0][0] == -(2**63) and sorted(ranges)[-1][1] == 2**63 - 1
    for (_, high), (low, _) in zip(sorted(ranges), sorted(ranges)[1:], strict=False):
        assert low == high + 1
    for b, (low, high) in enumerate(ranges):
        assert bucket_of(low) == bucket_of(high) == b


@pytest.mark.parametrize("keys", [49, 50])
def test_the_merge_starts_once_the_recent_keys_reach_their_limit(tmp_path: Path, keys: int) -> None:
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db, recent_keys=50)
    store.commit([[rec("t", str(i)) for i in range(keys)]])
    step = store.maintain(Retention(), 100)
    in_table = sqlite3.connect(db).execute("SELECT count(*) FROM keys").fetchone()[0]
    assert (step.more, in_table > 0) == ((True, True) if keys == 50 else (False, False))
    store.close()
