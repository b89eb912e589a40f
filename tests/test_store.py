"""The SQLite store on its own: schema, migration, insert/dedup/counters, reads, faults."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.messages import EventRecord, StoredEvent
from aggregator.store import (
    StoreBroken,
    StoreDamaged,
    StoreMismatch,
    StoreUnavailable,
    sqlite_keys,
    sqlite_reader,
    sqlite_search,
)
from aggregator.store.base import Retention
from aggregator.store.query import EventQuery
from aggregator.store.search import parse
from aggregator.store.sqlite import (
    BOUND_RETRY_SECONDS,
    BOUND_WAIT_MS,
    SQLiteReader,
    SQLiteStore,
    wal_restart_pages,
)
from aggregator.store.sqlite_schema import SCHEMA_VERSION
from tests.wal import TransactionCounter, current_frames, wal_commits

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


def test_one_commit_is_one_transaction_on_disk_whatever_it_holds(
    db: Path, frozen_wal: None
) -> None:
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


def sqlite_error(message: str, code: int, name: str) -> sqlite3.DatabaseError:
    """An error as SQLite's module raises it, with its result code and name."""
    error = sqlite3.DatabaseError(message)
    error.sqlite_errorcode = code
    error.sqlite_errorname = name
    return error


def io_error() -> sqlite3.DatabaseError:
    return sqlite_error("disk I/O error", sqlite3.SQLITE_IOERR, "SQLITE_IOERR")


def corrupt() -> sqlite3.DatabaseError:
    return sqlite_error(
        "database disk image is malformed", sqlite3.SQLITE_CORRUPT, "SQLITE_CORRUPT"
    )


class FailingRollback:
    """The store's connection, but ROLLBACK fails: the state of the connection is unknown."""

    def __init__(self, conn: sqlite3.Connection, error: sqlite3.DatabaseError) -> None:
        self._conn = conn
        self._error = error

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "ROLLBACK":
            raise self._error
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


@pytest.mark.parametrize(
    ("fault", "rollback", "reason"),
    [
        ("sqlite", io_error, "rollback after injected (SQLITE_CONSTRAINT_TRIGGER) failed: "),
        ("bug", io_error, "rollback after RuntimeError('a bug') failed: "),
        # Damage met by the rollback, or by the statement it undoes, is what is reported.
        ("sqlite", corrupt, "the store is damaged (database disk image is malformed "),
        ("damage", io_error, "the store is damaged (database disk image is malformed "),
    ],
)
def test_a_failed_rollback_is_store_broken_naming_both_errors(
    db: Path,
    fault: str,
    rollback: Callable[[], sqlite3.DatabaseError],
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = SQLiteStore(db)
    conn = store._conn
    error = rollback()
    store._conn = FailingRollback(conn, error)  # type: ignore[assignment]
    if fault == "sqlite":
        conn.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
    else:  # a bug, or damage, met inside the transaction, after BEGIN
        cause = RuntimeError("a bug") if fault == "bug" else corrupt()

        def fail(*args: object) -> object:
            raise cause

        monkeypatch.setattr(sqlite_keys, "stored_keys", fail)
    with pytest.raises(StoreBroken) as caught:
        store.commit([[rec("a", "1")]])
    if reason.startswith("rollback"):
        assert type(caught.value) is StoreBroken
        assert str(caught.value) == reason + "disk I/O error (SQLITE_IOERR)"
    else:
        assert isinstance(caught.value, StoreDamaged)
        assert str(caught.value).startswith(reason + f"(SQLITE_CORRUPT)) at {db}: ")
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
    store._checkpointer.close()  # its passes grow the file between the two stats below
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


def test_search_turned_on_is_built_in_steps_then_upkeep_writes_nothing(
    db: Path, frozen_wal: None
) -> None:
    """A store that turns search on indexes its events in steps of at most ``max_events``,
    saying ``more`` until the step that reaches the last event; once complete, an upkeep round
    with nothing due writes no transaction (each would be a sync for nothing)."""
    store = SQLiteStore(db)  # search off: nothing is indexed
    store.commit([[rec("t", str(i)) for i in range(250)]])
    store.close()
    store = SQLiteStore(db, search=True)
    conn = sqlite3.connect(db)
    try:
        steps = []
        for _ in range(3):
            more = store.maintain(Retention(), 100).more
            steps.append((more, sqlite_search.upto(conn)))
        assert steps == [(True, 100), (True, 200), (False, 250)]
        transactions = TransactionCounter(db)
        assert not store.maintain(Retention(), 100).more
        assert transactions.count() == 0
    finally:
        conn.close()
        store.close()


def damage_oldest_events(path: Path) -> None:
    """Overwrite the leaf page of the oldest events, in the file itself (the WAL checkpointed
    into it first)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        (oldest,) = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' "
            "ORDER BY path LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    with path.open("r+b") as file:
        file.seek((oldest - 1) * page_size)
        file.write(b"\xa5" * page_size)


def test_upkeep_that_reads_a_damaged_page_says_the_store_is_damaged(db: Path) -> None:
    """Retention's first read (is anything due?) is outside a transaction: damage met there is
    fatal too, and names the file to restore."""
    store = SQLiteStore(db)
    store.commit([[rec("t", str(i), '{"x": "' + "y" * 200 + '"}') for i in range(300)]])
    store.close()
    damage_oldest_events(db)  # the leaf of the oldest events, which nothing at open reads
    store = SQLiteStore(db, clock=lambda: datetime.now(UTC) + timedelta(days=1))
    try:
        with pytest.raises(StoreDamaged) as caught:
            store.maintain(Retention(max_age_seconds=60), 100)
        assert str(caught.value).startswith(
            f"the store is damaged (database disk image is malformed (SQLITE_CORRUPT)) at {db}: "
        )
    finally:
        store.close()


def test_a_reader_holding_the_wal_past_its_bound_delays_one_commit_a_second(
    db: Path, frozen_wal: None
) -> None:
    """A reader's snapshot (the integrity check holds one for seconds) keeps a checkpoint from
    starting the WAL over: the commit that finds the WAL past its bound waits ``BOUND_WAIT_MS``
    for the reader, and the commits of the next ``BOUND_RETRY_SECONDS`` do not try again."""
    store = SQLiteStore(db, wal_pages=16, synchronous="normal")  # bounded at 128 KiB
    wal = db.with_name(db.name + "-wal")
    reader = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        store.commit([[rec("t", "first")]])
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # the snapshot is held now
        while wal.stat().st_size <= 2 * 16 * 4096:
            store.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        waited, started = 0, time.monotonic()
        for i in range(10):
            before = time.monotonic()
            store.commit([[rec("t", str(i))]])
            waited += time.monotonic() - before >= BOUND_WAIT_MS / 1000
        elapsed = time.monotonic() - started
        # Each wait takes the whole BOUND_WAIT_MS; one more is allowed per second gone by.
        assert 1 <= waited <= 1 + elapsed / BOUND_RETRY_SECONDS
    finally:
        reader.close()
        store.close()


def test_a_migration_that_fails_is_refused_naming_the_error_and_changes_nothing(
    db: Path,
) -> None:
    """A file of ours whose schema version was set back (by hand, or by a tool that restored
    only the header) meets, when migrated, a table it already has: refused with SQLite's reason,
    the migration rolled back."""
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 1")  # before the probe table, which it has
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StoreMismatch) as refused:
        SQLiteStore(db)
    assert str(refused.value) == (
        f"{db} cannot be opened as the aggregator's store: table probe already exists "
        "(SQLITE_ERROR)"
    )
    assert db.read_bytes() == before
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.close()
    SQLiteStore(db).close()  # the refusal released its lock


def test_a_store_that_cannot_be_opened_at_all_is_refused_naming_the_error(db: Path) -> None:
    """No file descriptor left for SQLite's own read-only look at the file (the lock took the
    last one): refused with SQLite's reason, not a crash while cleaning up."""
    import resource

    SQLiteStore(db).close()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    free = os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor: the lock's
    os.close(free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (free + 1, hard))
    try:
        with pytest.raises(StoreMismatch) as refused:
            SQLiteStore(db)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert str(refused.value) == (
        f"{db} cannot be opened as the aggregator's store: unable to open database file "
        "(SQLITE_CANTOPEN)"
    )
    SQLiteStore(db).close()  # the refusal released its lock


def test_with_search_on_a_commit_indexes_its_events_in_its_transaction(db: Path) -> None:
    """Once the index is complete, each commit indexes its own events (their ids and payloads)
    and keeps it complete: they are found at once, and upkeep has nothing left to build."""
    store = SQLiteStore(db, search=True)
    reader = SQLiteReader(db, search=True)
    try:
        store.commit([[rec("t", f"kilo{i}", '{"m": "alpha"}') for i in range(3)]])
        assert store.commit([[rec("t", "kilo0")]]).counts == [(0, 1)]  # nothing to index
        store.commit([[rec("t", "lima", '{"m": "beta alpha"}')]])

        def found(words: str) -> list[str]:
            query = EventQuery(search=parse(words), limit=10)
            return [e.event_id for e in reader.find(query)]

        assert found("alpha") == ["kilo0", "kilo1", "kilo2", "lima"]
        assert found("lima") == ["lima"] and found("beta") == ["lima"]
        assert not store.maintain(Retention(), 100).more
    finally:
        reader.close()
        store.close()


# The start-up checks (issue 21), in-process on real files: what a store refuses to open, and
# what it opens. tests/test_store_files.py and tests/test_damage.py meet the same files through a
# server process, which mutation testing cannot see into. A *crash image* is the store's files
# copied while it is open: what a power cut or a SIGKILL leaves on disk (the file and its WAL,
# not yet checkpointed into it; the -shm beside them).

NAME = "aggregator.sqlite3"
READ_ONLY_RULE = (
    "is read-only: the server must write its store; make the file and its directory (and its "
    "file system) writable"
)


def crash_image(
    tmp_path: Path, commits: int, *, events: int = 1, payload: str = "{}", shm: bool = False
) -> Path:
    """A store that took ``commits`` transactions of ``events`` events each and crashed: its
    file and WAL (and its ``-shm`` if asked) in a directory of their own. No checkpoint runs
    meanwhile (``frozen_wal``), so every transaction is still in the WAL, and the keys of the
    events are not merged into the index (as ``close`` does)."""
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    live.mkdir()
    crashed.mkdir()
    store = SQLiteStore(live / NAME)
    try:
        for i in range(commits):
            store.commit([[rec("t", f"{i}-{j}", payload) for j in range(events)]])
        for suffix in ("", "-wal", "-shm") if shm else ("", "-wal"):
            shutil.copyfile(live / (NAME + suffix), crashed / (NAME + suffix))
    finally:
        store.close()
    return crashed / NAME


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """``path`` alone (a file, or a directory but not what it holds) made unwritable: its mode
    for a user, its immutable attribute for root (who ignores modes)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & 0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i failed as root: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def assert_opens_with(path: Path, received: int) -> None:
    """The store opens (its lock was released by the refusal) and holds ``received`` events."""
    SQLiteStore(path).close()
    reader = SQLiteReader(path)
    try:
        assert reader.counters().received == received
    finally:
        reader.close()


def test_an_empty_file_beside_a_wal_is_refused_and_both_are_kept(
    tmp_path: Path, frozen_wal: None
) -> None:
    """SQLite deletes the WAL of an empty file when it opens it: a database that lives in its
    WAL (a truncated or half-restored file) would be lost and replaced by a new store."""
    path = crash_image(tmp_path, 3)
    path.write_bytes(b"")
    wal = path.with_name(NAME + "-wal")
    before = files(path.parent)
    with pytest.raises(StoreMismatch) as refused:
        SQLiteStore(path)
    assert str(refused.value) == (
        f"{path} is empty but {wal} beside it holds {len(before[wal.name])} bytes of a "
        "database's log (a truncated or half-restored file?); move both aside, or delete the "
        "WAL too for a new store"
    )
    assert files(path.parent) == before
    wal.unlink()  # as the message says: for a new store, the WAL goes too
    assert_opens_with(path, 0)


def test_an_empty_file_beside_an_empty_wal_is_a_new_store(tmp_path: Path) -> None:
    """An empty WAL holds nothing to lose (a new store killed before its first write)."""
    path = tmp_path / NAME
    path.write_bytes(b"")
    path.with_name(NAME + "-wal").write_bytes(b"")
    store = SQLiteStore(path)
    try:
        assert store.commit([[rec("t", "a")]]).counts == [(1, 0)]
    finally:
        store.close()
    assert_opens_with(path, 1)


def damage_a_frame(path: Path, after_commit: int) -> int:
    """Flip one byte in the page after the ``after_commit``-th commit frame of the WAL; the
    frame's number (1-based, as recovery counts them)."""
    wal = path.with_name(NAME + "-wal")
    data = bytearray(wal.read_bytes())
    frames = current_frames(bytes(data))
    commits = [i for i, (_, commit) in enumerate(frames) if commit]
    damaged = commits[after_commit] + 1
    data[frames[damaged][0] + 24 + 100] ^= 0xFF
    wal.write_bytes(data)
    return damaged + 1


def test_a_damaged_wal_frame_is_refused_when_every_commit_was_synced(
    tmp_path: Path, frozen_wal: None
) -> None:
    """Recovery stops at a frame whose checksum fails and takes the rest for a torn tail; under
    ``synchronous = full`` every commit was synced, so commits past it were acknowledged: the
    store is refused, naming the frame and the file, and left as it was."""
    path = crash_image(tmp_path, 10)  # the schema's transaction, then 10 of one event each
    frame = damage_a_frame(path, 5)  # after the 5th event's commit: 5 more are past it
    before = {name: data for name, data in files(path.parent).items()}
    with pytest.raises(StoreDamaged) as refused:
        SQLiteStore(path)
    assert str(refused.value).startswith(
        f"the store is damaged (its WAL is damaged at frame {frame}: recovery would drop 4 or "
        "more acknowledged transactions after it"
    )
    assert f") at {path}: " in str(refused.value)
    assert {n: d for n, d in files(path.parent).items() if n in before} == before


@pytest.mark.parametrize("synchronous", ["normal", "off"])
def test_a_damaged_wal_frame_is_a_torn_tail_when_commits_were_not_synced(
    tmp_path: Path, frozen_wal: None, synchronous: str
) -> None:
    """Without a sync at every commit a power cut may tear any frame of the WAL's tail: the
    store opens with what recovery kept, the transactions before the damage."""
    path = crash_image(tmp_path, 10)
    damage_a_frame(path, 5)
    SQLiteStore(path, synchronous=synchronous).close()
    assert_opens_with(path, 5)


def test_a_read_only_store_file_is_refused_before_anything_reads_it(
    tmp_path: Path, frozen_wal: None
) -> None:
    """SQLite opens a file it cannot write read-only, without a word: such a server answered
    ``/health`` until its first publish failed. Refused before SQLite opens it, so not even a
    ``-shm`` is added beside it."""
    path = crash_image(tmp_path, 2)
    before = files(path.parent)
    with unwritable(path), pytest.raises(StoreUnavailable) as refused:
        SQLiteStore(path)
    assert str(refused.value) == f"{path} {READ_ONLY_RULE}"
    assert files(path.parent) == before
    assert_opens_with(path, 2)


def test_a_store_in_a_read_only_directory_is_refused_even_with_its_wal_there(
    tmp_path: Path, frozen_wal: None
) -> None:
    """With its ``-wal`` and ``-shm`` already there SQLite could write the store, but could
    never create them again once they are removed (at close): the directory must be writable."""
    path = crash_image(tmp_path, 2, shm=True)
    before = files(path.parent)
    with unwritable(path.parent), pytest.raises(StoreUnavailable) as refused:
        SQLiteStore(path)
    assert str(refused.value) == f"{path} {READ_ONLY_RULE}"
    assert files(path.parent) == before
    assert_opens_with(path, 2)


def test_a_store_whose_wal_is_read_only_is_refused(tmp_path: Path, frozen_wal: None) -> None:
    """The file and its directory writable, its WAL not (restored with the wrong owner, say):
    SQLite opens the WAL read-only, without a word, and every write would fail. Only a write
    tells; it is rolled back."""
    path = crash_image(tmp_path, 2)
    wal = path.with_name(NAME + "-wal")
    before = files(path.parent)
    with unwritable(wal), pytest.raises(StoreUnavailable) as refused:
        SQLiteStore(path)
    assert str(refused.value) == f"{path} {READ_ONLY_RULE}"
    assert {n: d for n, d in files(path.parent).items() if n in before} == before
    assert_opens_with(path, 2)


def test_the_wal_bound_is_exactly_twice_the_restart_size(db: Path, frozen_wal: None) -> None:
    """With the checkpointer starved, a commit that finds the WAL past twice its restart size
    checkpoints it and starts it over (new salts): one frame past is past; exactly twice is
    not. 2,231 pages make twice the restart size a whole number of frames (32 + 4,436 × 4,120
    bytes), with more than a frame between it and any larger bound."""
    pages = 2_231
    bound = 2 * pages * 4096
    store = SQLiteStore(db, wal_pages=pages, synchronous="normal")  # no sync: fills fast
    wal = db.with_name(db.name + "-wal")

    def fill(size: int) -> None:
        while wal.stat().st_size < size:  # one frame each: page 1 only
            store.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        assert wal.stat().st_size == size

    try:
        store.commit([[rec("t", "first")]])
        fill(bound + 4120)
        salt, _ = wal_commits(db)
        store.commit([[rec("t", "a frame past the bound")]])
        assert wal_commits(db)[0] != salt  # started over
        fill(bound)
        salt, commits = wal_commits(db)
        store.commit([[rec("t", "at the bound")]])
        assert wal_commits(db) == (salt, commits + 1)  # appended to the same WAL
    finally:
        store.close()
    assert_opens_with(db, 3)


def test_a_store_damaged_where_its_open_reads_is_refused_as_damaged(
    tmp_path: Path, frozen_wal: None
) -> None:
    """The file is ours (its schema reads), but the events the open reads back (the keys not
    yet merged into the index at a crash) are on a damaged page: damaged, not foreign, and the
    refusal names the file to restore."""
    path = crash_image(tmp_path, 1, events=300, payload='{"x": "' + "y" * 200 + '"}')
    damage_oldest_events(path)
    with pytest.raises(StoreDamaged) as refused:
        SQLiteStore(path)
    assert str(refused.value).startswith(
        f"the store is damaged (database disk image is malformed (SQLITE_CORRUPT)) at {path}: "
    )


def test_a_statement_run_by_execute_takes_effect_at_once(db: Path) -> None:
    """The write connection is in autocommit mode: a statement outside the store's own
    transactions (``execute``, which tests inject faults with) is never left in an open one."""
    store = SQLiteStore(db)
    try:
        store.execute("INSERT INTO probe (filler) VALUES (x'00')")
        other = sqlite3.connect(db)
        try:
            assert other.execute("SELECT count(*) FROM probe").fetchone() == (1,)
        finally:
            other.close()
        store.execute("DELETE FROM probe")
        assert store.commit([[rec("t", "a")]]).counts == [(1, 0)]
    finally:
        store.close()


def reader_over(tmp_path: Path, count: int) -> SQLiteReader:
    """A reader of a store holding ``count`` events of topic ``t``."""
    db = tmp_path / "aggregator.sqlite3"
    store = SQLiteStore(db)
    store.commit([[rec("t", f"e{i}") for i in range(count)]])
    store.close()
    return SQLiteReader(db)


def test_a_read_whose_limit_passes_before_its_commit_leaves_the_reader_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read whose query ended just inside its time limit, the limit passing before its
    ``COMMIT``: the read's first interrupt fired in the ``COMMIT``, the answer already read was
    refused, and the reader stayed in its transaction ("cannot start a transaction within a
    transaction" on every read after)."""
    reader = reader_over(tmp_path, 50)
    try:
        reader._conn.set_progress_handler(reader._overdue, 1)  # the clock at every step
        real = sqlite_search.find

        def find(conn: sqlite3.Connection, query: EventQuery) -> list[StoredEvent]:
            rows = real(conn, query)
            reader.deadline = 0.0  # the limit passes as the query ends
            return rows

        monkeypatch.setattr(sqlite_search, "find", find)
        assert len(reader.find(EventQuery(limit=10))) == 10
        monkeypatch.undo()
        assert len(reader.find(EventQuery(limit=100))) == 50
        assert not reader._conn.in_transaction
    finally:
        reader.close()


def test_a_read_interrupted_in_its_transaction_leaves_the_reader_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read over its time limit is interrupted, and only it: SQLite's step counts add up
    across statements, so the interrupt fired again in the read's ``COMMIT`` now and then,
    which left the reader in its transaction ("cannot start a transaction within a
    transaction" on every read after). Found by an attack on the read process."""
    reader = reader_over(tmp_path, 500)
    try:
        reader._conn.set_progress_handler(reader._overdue, 50)  # the clock every 50 steps
        monkeypatch.setattr(sqlite_reader, "READ_TIMEOUT_SECONDS", 0.0)
        for _ in range(50):
            with pytest.raises(StoreUnavailable, match="longer than 0 s"):
                reader.find(EventQuery(limit=500))
        monkeypatch.undo()
        assert len(reader.find(EventQuery(limit=1000))) == 500
    finally:
        reader.close()
