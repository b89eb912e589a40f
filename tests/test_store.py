"""The SQLite store on its own: schema, migration, insert/dedup/counters, reads, faults."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aggregator.messages import EventRecord
from aggregator.store import StoreBroken, StoreMismatch, StoreUnavailable, sqlite_keys
from aggregator.store.sqlite import SQLiteReader, SQLiteStore, wal_restart_pages
from aggregator.store.sqlite_schema import SCHEMA_VERSION
from tests.wal import TransactionCounter

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
    # A copy in a later transaction is a duplicate too: the stored payload stays the first's.
    assert store.commit([[rec("a", "1", '{"v":4}')]]).counts == [(0, 1)]
    assert [e.payload for e in reader.events("a", 0, 10, 0)] == ['{"v":1}', "{}"]


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


def test_one_commit_is_one_transaction_on_disk_whatever_it_holds(db: Path) -> None:
    store = SQLiteStore(db)
    transactions = TransactionCounter(db)
    store.commit([[rec("a", "1"), rec("b", "1")], [rec("a", "2")], [rec("a", "1")]])
    assert transactions.count() == 1  # the events, the counters and the topics together
    store.commit([[rec("a", "1")]])  # only a duplicate: the counters still change
    assert transactions.count() == 2
    assert SQLiteReader(db).counters() == (5, 3, 2, ["a", "b"], 0)


@pytest.mark.parametrize(
    "trigger",
    [
        "BEFORE UPDATE ON counters",
        "BEFORE INSERT ON topics",  # a new topic
        "BEFORE UPDATE ON topics",  # a known topic
    ],
    ids=["counters", "new-topic", "known-topic"],
)
def test_a_failure_while_counting_undoes_the_events_too(db: Path, trigger: str) -> None:
    """The counters change in the events' transaction: when that step fails (here a trigger
    another connection adds raises), nothing of the commit remains."""
    store = SQLiteStore(db)
    store.commit([[rec("a", "0")]])
    other = sqlite3.connect(db, isolation_level=None)
    other.execute(f"CREATE TRIGGER fail {trigger} BEGIN SELECT RAISE(ABORT, 'injected'); END")
    batch = [[rec("a", "1"), rec("new", "1")], [rec("a", "0")]]
    with pytest.raises(StoreUnavailable, match="injected"):
        store.commit(batch)
    reader = SQLiteReader(db)
    assert [e.event_id for e in reader.events(None, 0, 10, 0)] == ["0"]
    assert reader.counters() == (1, 1, 0, ["a"], 0)
    assert reader.topics() == [("a", 1, 0, 1, 0)]
    other.execute("DROP TRIGGER fail")
    assert store.commit(batch).counts == [(2, 0), (0, 1)]
    assert reader.counters() == (4, 3, 1, ["a", "new"], 0)


def test_errors_name_sqlites_code(db: Path) -> None:
    store = SQLiteStore(db)
    store.commit([[rec("a", "0")]])
    pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
    store.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreUnavailable) as caught:
        store.commit([[rec("a", str(i), "{" + f'"x":"{"y" * 3000}"' + "}") for i in range(50)]])
    assert str(caught.value) == "database or disk is full (SQLITE_FULL)"


class FailingRollback:
    """The store's connection, but ROLLBACK fails: the state of the connection is unknown."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("sqlite", "rollback after injected (SQLITE_CONSTRAINT_TRIGGER) failed: disk I/O error"),
        ("bug", "rollback after RuntimeError('a bug') failed: disk I/O error"),
    ],
)
def test_a_failed_rollback_is_store_broken_naming_both_errors(
    db: Path, fault: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db)
    conn = store._conn
    store._conn = FailingRollback(conn)  # type: ignore[assignment]
    if fault == "sqlite":
        conn.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
    else:  # a bug met inside the transaction, after BEGIN

        def bug(*args: object) -> object:
            raise RuntimeError("a bug")

        monkeypatch.setattr(sqlite_keys, "stored_keys", bug)
    with pytest.raises(StoreBroken) as caught:
        store.commit([[rec("a", "1")]])
    assert str(caught.value) == reason
    conn.execute("ROLLBACK")


def test_the_probe_commits_its_size_then_frees_it(db: Path) -> None:
    store = SQLiteStore(db)
    store.probe(200_000)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM probe").fetchone() == (0,)
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] * 4096 > 150_000  # its pages
    # Full: the probe fails like a transaction of that size would, and leaves nothing behind.
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    store.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreUnavailable, match=r"^database or disk is full \(SQLITE_FULL\)$"):
        store.probe(400_000)
    assert conn.execute("SELECT count(*) FROM probe").fetchone() == (0,)
    store.probe(100_000)  # fits in the freed pages
    store.execute("PRAGMA max_page_count = 1073741823")
    store.probe(400_000)
    store.commit([[rec("a", "1")]])  # the writer goes on as before
    assert SQLiteReader(db).counters() == (1, 1, 0, ["a"], 0)


def test_head_ping_and_size(db: Path) -> None:
    store = SQLiteStore(db)
    reader = SQLiteReader(db)
    assert reader.head() == 0
    reader.ping()
    store.commit([[rec("a", str(i)) for i in range(5)]])
    assert reader.head() == 5
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 0
    assert reader.size_bytes() == db.stat().st_size + wal.stat().st_size


def test_a_reader_of_a_vanished_store_is_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite3"
    SQLiteStore(db).close()
    reader = SQLiteReader(db)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("DROP TABLE counters")
    other.execute("DROP TABLE events")
    other.execute("DROP TABLE topics")
    for read in (reader.ping, reader.head, reader.counters, reader.topics):
        with pytest.raises(StoreUnavailable, match=r"no such table: \w+ \(SQLITE_ERROR\)"):
            read()
    with pytest.raises(StoreUnavailable, match="no such table"):
        reader.events(None, 0, 10, 0)


def test_the_writer_connection_takes_its_settings(db: Path) -> None:
    store = SQLiteStore(db)
    assert store.path == db
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL by default
    assert store._conn.execute("PRAGMA cache_size").fetchone() == (-256 * 1024,)
    store.close()
    store = SQLiteStore(db, cache_mib=3)
    assert store._conn.execute("PRAGMA cache_size").fetchone() == (-3 * 1024,)
    # A WAL that started over is cut back to its restart size.
    assert store._conn.execute("PRAGMA journal_size_limit").fetchone() == (16_384 * 4096,)
    store.close()
    store = SQLiteStore(db, wal_pages=256)
    assert store._conn.execute("PRAGMA journal_size_limit").fetchone() == (256 * 4096,)
    store.close()


def test_received_at_is_utc_now_whatever_the_local_zone(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time
    from datetime import UTC, datetime

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        store = SQLiteStore(db)
        before = datetime.now(UTC).replace(tzinfo=None)
        store.commit([[rec("a", "1")]])
        after = datetime.now(UTC).replace(tzinfo=None)
    finally:
        monkeypatch.undo()
        time.tzset()
    [stored] = SQLiteReader(db).events(None, 0, 10, 0)
    assert stored.received_at.endswith("Z") and len(stored.received_at) == 27
    assert before <= datetime.fromisoformat(stored.received_at[:-1]) <= after


def test_refusals_name_the_file(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreMismatch) as foreign:
        SQLiteStore(db)
    assert str(foreign.value) == (
        f"{db} is an SQLite database of another program (application_id 0x0, user_version 0, "
        "tables: notes); point --data-dir elsewhere"
    )
    garbage = db.with_name("garbage")
    garbage.write_bytes(b"this is not a database" * 300)
    with pytest.raises(StoreMismatch) as corrupt:
        SQLiteStore(garbage)
    assert str(corrupt.value) == (
        f"{garbage} cannot be opened as the aggregator's store: "
        "file is not a database (SQLITE_NOTADB)"
    )


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


@pytest.mark.parametrize(
    ("max_bytes", "pages"),
    [
        (0, 16_384),  # no size limit: ~64 MiB of WAL
        (1 << 30, 16_384),  # an eighth of 1 GiB is more: the cap
        (64 << 20, 2_048),  # an eighth of the limit, in 4 KiB pages
        (100_000_000, 3_051),  # whole pages, rounded down
        (1 << 20, 256),  # the floor: 1 MiB of WAL
    ],
)
def test_the_wal_starts_over_at_an_eighth_of_the_size_limit_within_bounds(
    max_bytes: int, pages: int
) -> None:
    assert wal_restart_pages(max_bytes) == pages
    assert isinstance(wal_restart_pages(max_bytes), int)  # whole pages, into a PRAGMA's text


def test_the_stores_clock_is_utc_aware() -> None:
    """So that arithmetic on it (retention's cutoff) is in UTC, whatever the local zone's DST."""
    from datetime import timedelta

    from aggregator.store.base import utc_now

    assert utc_now().utcoffset() == timedelta(0)


def test_a_wal_the_checkpointer_let_grow_is_checkpointed_by_the_next_commit(
    db: Path, frozen_wal: None
) -> None:
    """With the checkpointer starved (here: doing nothing), the WAL still stays within twice
    its restart size, plus the transaction that crossed it."""
    store = SQLiteStore(db, wal_pages=256)  # restarts at 1 MiB: bounded at 2 MiB
    wal = db.with_name(db.name + "-wal")
    biggest = 0
    for i in range(40):  # ~4 MB in transactions of ~100 KB
        store.commit([[rec("t", f"{i}-{j}", '{"x":"' + "y" * 2000 + '"}') for j in range(50)]])
        biggest = max(biggest, wal.stat().st_size)
    assert biggest <= 2 * 256 * 4096 + 512 * 1024  # the crossing transaction: pages, indexes
    assert SQLiteReader(db).counters()[:3] == (2000, 2000, 0)
    store.close()
