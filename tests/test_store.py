"""The SQLite store on its own: schema, migration, insert/dedup/counters, reads, faults."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aggregator.messages import EventRecord
from aggregator.store import StoreMismatch, StoreUnavailable
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from aggregator.store.sqlite_schema import SCHEMA_VERSION

# The SQLite store itself; tests/test_postgres.py tests the PostgreSQL one.
pytestmark = pytest.mark.sqlite_only


def rec(topic: str, event_id: str, payload: str = "{}") -> EventRecord:
    return EventRecord(topic, event_id, "2026-11-21T10:00:00Z", "src", payload)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


def test_migration_from_an_empty_file_sets_wal_and_version(db: Path) -> None:
    db.touch()
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"events", "counters", "topics"} <= tables
    assert conn.execute(
        "SELECT received, unique_processed, duplicate_dropped, expired, last_seq FROM counters"
    ).fetchall() == [(0, 0, 0, 0, 0)]


def test_reopening_keeps_data_and_does_not_migrate_again(db: Path) -> None:
    store = SQLiteStore(db)
    store.commit([[rec("a", "1")]])
    store.close()
    store = SQLiteStore(db)
    result = store.commit([[rec("a", "1"), rec("a", "2")]])
    assert result.counts == [(1, 1)]
    store.close()
    assert SQLiteReader(db).counters() == (3, 2, 1, ["a"], 0)


def test_commit_dedups_within_and_across_batches_first_copy_wins(db: Path) -> None:
    store = SQLiteStore(db)
    result = store.commit(
        [
            [rec("a", "1", '{"v":1}'), rec("a", "1", '{"v":2}'), rec("b", "1")],
            [rec("a", "1", '{"v":3}'), rec("a", "2")],
        ]
    )
    assert result.counts == [(2, 1), (1, 1)] and result.stored == 3
    assert result.stored_flags == [[True, False, True], [False, True]]
    reader = SQLiteReader(db)
    assert [(e.seq, e.topic, e.event_id) for e in reader.events(None, 0, 10, 0)] == [
        (1, "a", "1"),
        (2, "b", "1"),
        (3, "a", "2"),
    ]
    assert [e.payload for e in reader.events("a", 0, 10, 0)] == ['{"v":1}', "{}"]
    assert reader.counters() == (5, 3, 2, ["a", "b"], 0)
    assert reader.topics() == [("a", 2, 2, 3, 0), ("b", 1, 0, 2, 0)]


def test_same_event_id_on_two_topics_is_two_events(db: Path) -> None:
    result = SQLiteStore(db).commit([[rec("a", "x"), rec("b", "x")]])
    assert result.counts == [(2, 0)]


def test_reads_by_topic_cursor_limit_offset(db: Path) -> None:
    store = SQLiteStore(db)
    store.commit([[rec("a" if i % 2 else "b", str(i)) for i in range(10)]])
    reader = SQLiteReader(db)
    assert [e.seq for e in reader.events(None, 0, 100, 0)] == list(range(1, 11))
    assert [e.seq for e in reader.events(None, 4, 3, 0)] == [5, 6, 7]
    assert [e.seq for e in reader.events("a", 0, 100, 0)] == [2, 4, 6, 8, 10]
    assert [e.seq for e in reader.events("a", 4, 100, 1)] == [8, 10]
    assert reader.events("nope", 0, 100, 0) == []


def test_a_full_database_rolls_back_the_whole_transaction(db: Path) -> None:
    store = SQLiteStore(db)
    store.commit([[rec("a", "0")]])
    pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
    store.execute(f"PRAGMA max_page_count = {pages}")
    big = "{" + f'"x":"{"y" * 3000}"' + "}"
    with pytest.raises(StoreUnavailable, match="full"):
        store.commit([[rec("a", str(i), big) for i in range(1, 50)], [rec("b", "1")]])
    reader = SQLiteReader(db)
    assert reader.counters() == (1, 1, 0, ["a"], 0)
    assert [e.event_id for e in reader.events(None, 0, 100, 0)] == ["0"]
    store.execute("PRAGMA max_page_count = 1073741823")
    assert store.commit([[rec("b", "1")]]).counts == [(1, 0)]


def test_a_foreign_database_is_refused_and_left_untouched(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StoreMismatch, match="another program"):
        SQLiteStore(db)
    assert db.read_bytes() == before


def test_a_corrupt_file_is_refused_and_left_untouched(db: Path) -> None:
    db.write_bytes(b"this is not a database" * 300)
    with pytest.raises(StoreMismatch, match="cannot be opened"):
        SQLiteStore(db)
    assert db.read_bytes() == b"this is not a database" * 300


def test_a_newer_schema_is_refused(db: Path) -> None:
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreMismatch, match="newer"):
        SQLiteStore(db)


def test_synchronous_setting_reaches_the_connection(db: Path) -> None:
    # 2 = FULL, 1 = NORMAL; read back through the store's own connection.
    for mode, code in (("full", 2), ("normal", 1)):
        store = SQLiteStore(db, synchronous=mode)
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == code
        store.close()


def test_a_failure_at_commit_says_the_events_may_have_been_stored(db: Path) -> None:
    """A write that fails at COMMIT (here: the WAL cannot grow while the frames are appended)
    may leave frames that recovery brings back: the store must not claim nothing was stored.
    A failure before COMMIT (the same limit hit by a statement) may claim it."""
    import resource

    store = SQLiteStore(db, cache_mib=64)
    try:
        store.commit([[rec("t", "seed")]])
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        wal = db.with_name(db.name + "-wal")
        limit = max(db.stat().st_size, wal.stat().st_size) + 8192
        big = "x" * 2000
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:  # 200 events of 2 KB: the cache holds them, the WAL is written at COMMIT
            with pytest.raises(StoreUnavailable) as failed:
                store.commit([[rec("t", f"e{i}", f'{{"x": "{big}"}}') for i in range(200)]])
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert failed.value.maybe_stored
        assert store.commit([[rec("t", "after")]]).counts == [(1, 0)]  # it goes on
    finally:
        store.close()
