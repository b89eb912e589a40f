"""Retention on the SQLite store: by age (an injected clock) and by size, oldest first, with the
keys forgotten with their events, counters cumulative, cursors valid; the writer's upkeep steps."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.messages import EventRecord
from aggregator.store import sqlite_keys
from aggregator.store.base import Retention
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from aggregator.store.sqlite_retention import used_bytes

pytestmark = pytest.mark.sqlite_only


@dataclass
class FakeClock:
    """A wall clock that moves only when told."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 21, 10, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def rec(topic: str, event_id: str, payload: str = "{}") -> EventRecord:
    return EventRecord(topic, event_id, "2026-11-21T10:00:00Z", "src", payload)


def upkeep(store: SQLiteStore, retention: Retention, step: int = 1000) -> int:
    """Steps until the store says there is nothing left to do; the events they deleted."""
    expired = 0
    while True:
        result = store.maintain(retention, step)
        expired += result.expired
        if not result.more:
            return expired


def seqs(db: Path, topic: str | None = None, after: int = 0) -> list[int]:
    return [e.seq for e in SQLiteReader(db).events(topic, after, 1000, 0)]


def test_by_age_the_oldest_go_and_the_counters_stay_cumulative(tmp_path: Path) -> None:
    db, clock = tmp_path / "s.sqlite3", FakeClock()
    store = SQLiteStore(db, clock=clock)
    store.commit([[rec("a", "1"), rec("b", "1"), rec("a", "1")]])  # seq 1, 2 at 10:00:00
    clock.advance(30)
    store.commit([[rec("a", "2"), rec("b", "2")]])  # seq 3, 4 at 10:00:30
    hour = Retention(max_age_seconds=60)
    assert upkeep(store, hour) == 0  # nothing is older than a minute yet
    clock.advance(45)  # the first commit is 75 s old, the second 45 s
    assert upkeep(store, hour) == 2
    assert seqs(db) == [3, 4]
    reader = SQLiteReader(db)
    assert reader.counters() == (5, 4, 1, ["a", "b"], 2)  # received, unique, duplicates stay
    assert [tuple(t) for t in reader.topics()] == [("a", 2, 1, 3, 1), ("b", 2, 0, 4, 1)]
    # Cursors stay valid across the deleted range: after=0 and after=1 start at the oldest left.
    assert seqs(db, after=1) == [3, 4] and seqs(db, "b", after=0) == [4]
    assert reader.head() == 4
    clock.advance(60)
    assert upkeep(store, hour) == 2
    assert seqs(db) == [] and reader.head() == 4  # seq is never given again
    assert reader.counters() == (5, 4, 1, [], 4)  # no topic has an event stored now
    store.commit([[rec("c", "1")]])
    assert seqs(db) == [5]  # not 1: a cursor given out before never sees a new event below it
    store.close()


def test_an_expired_events_key_is_forgotten_with_it(tmp_path: Path) -> None:
    db, clock = tmp_path / "s.sqlite3", FakeClock()
    store = SQLiteStore(db, clock=clock)
    store.commit([[rec("a", "old", '{"v":1}'), rec("a", "kept")]])
    clock.advance(10)
    store.commit([[rec("a", "young")]])
    clock.advance(55)  # "old" and "kept" are 65 s old, "young" 55 s
    assert upkeep(store, Retention(max_age_seconds=60)) == 2
    # The same key again: a new event, stored under a new seq; a stored key is still a duplicate.
    again = store.commit([[rec("a", "old", '{"v":2}'), rec("a", "young")]])
    assert again.stored_flags == [[True, False]]
    events = SQLiteReader(db).events("a", 0, 10, 0)
    assert [(e.seq, e.event_id, e.payload) for e in events] == [
        (3, "young", "{}"),
        (4, "old", '{"v":2}'),
    ]
    assert SQLiteReader(db).counters()[:3] == (5, 4, 1)  # "old" counted as stored twice
    store.close()
    # The same after a restart, with the keys merged into the table at close.
    store = SQLiteStore(db, clock=clock)
    assert store.commit([[rec("a", "old"), rec("a", "kept")]]).stored_flags == [[False, True]]
    store.close()


def test_by_size_the_store_is_brought_under_the_limit_oldest_first(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db)
    big = '{"text":"' + "x" * 2000 + '"}'
    for batch in range(20):
        store.commit([[rec("t", f"{batch}-{i}", big) for i in range(50)]])
    conn = sqlite3.connect(db)
    full = used_bytes(conn)
    limit = full // 2
    expired = upkeep(store, Retention(max_bytes=limit), step=100)
    assert used_bytes(conn) <= limit
    left = seqs(db)
    assert 0 < len(left) < 1000 and expired == 1000 - len(left)
    assert left == list(range(1001 - len(left), 1001))  # exactly the newest are left
    # Under the limit nothing more goes.
    assert upkeep(store, Retention(max_bytes=limit)) == 0
    store.close()


def test_reclaim_deletes_the_oldest_even_under_the_limit(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db)
    store.commit([[rec("t", str(i)) for i in range(30)]])
    generous = Retention(max_bytes=10**12)
    assert store.maintain(generous, 10).expired == 0
    assert store.maintain(generous, 10, reclaim=True).expired == 10
    assert store.maintain(Retention(max_age_seconds=3600), 10, reclaim=True).expired == 0
    assert seqs(db)[0] == 11
    store.close()


def test_keys_of_expired_events_are_swept_from_the_index(tmp_path: Path) -> None:
    db, clock = tmp_path / "s.sqlite3", FakeClock()
    store = SQLiteStore(db, clock=clock)
    store.commit([[rec("t", str(i)) for i in range(300)]])
    store.close()  # all 300 keys into the table
    store = SQLiteStore(db, clock=clock)
    clock.advance(120)
    store.commit([[rec("t", f"new-{i}") for i in range(20)]])
    assert upkeep(store, Retention(max_age_seconds=60)) == 300
    # Every bucket's sweep came due (300 expired ≥ half of 20 stored) and ran in its merge.
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM keys WHERE seq <= 300").fetchone() == (0,)
    assert conn.execute("SELECT min(swept) FROM merged").fetchone() == (300,)
    store.close()


def test_a_disk_filling_up_below_the_limit_is_met_by_deleting_the_oldest(tmp_path: Path) -> None:
    free = [10**12]
    store = SQLiteStore(tmp_path / "s.sqlite3", free_space=lambda: free[0], wal_pages=256)
    store.commit([[rec("t", str(i)) for i in range(30)]])
    generous = Retention(max_bytes=10**12)
    assert upkeep(store, generous) == 0
    free[0] = 3 * 1024 * 1024  # less than two checkpoints' worth (4 × 1 MiB) is left
    assert store.maintain(generous, 10).expired == 10
    assert store.maintain(Retention(max_age_seconds=3600), 10).expired == 0  # no size limit
    free[0] = 5 * 1024 * 1024
    assert upkeep(store, generous) == 0
    free[0] = 4 * 1024 * 1024  # exactly the reserve: not below it
    assert upkeep(store, generous) == 0
    assert seqs(tmp_path / "s.sqlite3")[0] == 11
    store.close()


def test_a_step_that_deleted_events_asks_for_another(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "s.sqlite3", clock=clock)
    store.commit([[rec("t", "old-1"), rec("t", "old-2")]])
    clock.advance(120)
    store.commit([[rec("t", str(i)) for i in range(10)]])
    minute = Retention(max_age_seconds=60)
    steps = [store.maintain(minute, 1) for _ in range(3)]
    # Few keys of expired events (no sweep due) and few recent keys (no merge): only the
    # deletions say whether there is more to do.
    assert [(step.expired, step.more) for step in steps] == [(1, True), (1, True), (0, False)]
    store.close()


def test_a_limit_far_below_the_store_keeps_what_fits(tmp_path: Path) -> None:
    """The keys of expired events stay in the key table until their bucket is swept, and they
    counted in the size: a limit set far below a store's size (turned on, or lowered) deleted
    nearly every event while the space was held by keys of events already gone. On a real
    server, a 60,000-event store (14 MB) under a 1 MB limit kept 351 events, where ~3,200 fit."""
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db)
    for batch in range(60):
        store.commit(
            [[rec("t", f"{batch}-{i}", '{"text": "' + "x" * 100 + '"}') for i in range(1000)]]
        )
    store.close()  # the keys merged into the table, as a store that ran a while has them
    conn = sqlite3.connect(db)
    per_event = used_bytes(conn) / 60_000  # the event, its index entries and its key
    conn.close()
    limit = 1_000_000
    store = SQLiteStore(db)
    try:
        upkeep(store, Retention(max_bytes=limit), step=5000)
        conn = sqlite3.connect(db)
        stored, used = conn.execute("SELECT count(*) FROM events").fetchone()[0], used_bytes(conn)
        conn.close()
    finally:
        store.close()
    assert used <= limit
    assert stored >= 0.8 * limit / per_event, (stored, limit / per_event)


def test_a_limit_of_a_few_bytes_deletes_every_event(tmp_path: Path) -> None:
    """Keys of expired events are swept before more events go while they hold more than a
    16th of the limit. Under a limit below 16 bytes a 16th is 0 bytes, which no keys at all
    held too: every step swept first, ``more`` for ever, and no event was ever deleted."""
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db)
    try:
        store.commit([[rec("t", str(i)) for i in range(200)]])
        tiny = Retention(max_bytes=1)
        first, second = store.maintain(tiny, 100), store.maintain(tiny, 100)
        assert (first.expired, second.expired) == (100, 0)  # the 100 keys are swept first
        assert first.expired + upkeep(store, tiny, step=100) == 200
        assert seqs(db) == []
    finally:
        store.close()


def test_keys_are_swept_first_from_just_past_a_16th_of_the_limit(tmp_path: Path) -> None:
    """The keys of expired events, none swept yet, hold 16 bytes each (``unswept_bytes``).
    At exactly a 16th of the limit the oldest events go by size; one key's worth below it,
    the keys are swept first and no event goes."""
    db, clock = tmp_path / "s.sqlite3", FakeClock()
    store = SQLiteStore(db, clock=clock, free_space=lambda: 10**12)
    try:
        store.commit([[rec("t", f"old-{i}") for i in range(100)]])
        clock.advance(120)
        store.commit([[rec("t", str(i)) for i in range(1900)]])
        assert store.maintain(Retention(max_age_seconds=60), 1000).expired == 100
        conn = sqlite3.connect(db)
        try:
            assert sqlite_keys.unswept_bytes(conn) == 100 * 16  # no sweep came due
        finally:
            conn.close()
        at_a_16th = Retention(max_bytes=16 * 100 * 16)  # far below the store's size
        assert store.maintain(at_a_16th, 10).expired == 10
        just_below = Retention(max_bytes=16 * 110 * 16 - 16)
        assert store.maintain(just_below, 10).expired == 0  # a sweep instead
    finally:
        store.close()
