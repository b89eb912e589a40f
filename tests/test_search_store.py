"""The full-text index in the stores: kept in the commit's transaction, deleted with retention,
built in steps when search is turned on for a store that has events, and the filters' plans use
indexes (no full scan for ``topic`` + ``since``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aggregator.actors import sse
from aggregator.messages import EventRecord, StoredEvent
from aggregator.store import Retention, sqlite_keys, sqlite_search
from aggregator.store.postgres import PostgresReader, PostgresStore
from aggregator.store.query import EventQuery, SearchBuilding, SearchOff
from aggregator.store.search import event_words, matches, parse, tsvector_literal
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from tests import pg
from tests.test_retention import FakeClock


def rec(n: int, word: str = "common", topic: str = "t") -> EventRecord:
    stamp = f"2026-11-30T10:{n // 60 % 60:02d}:{n % 60:02d}Z"
    return EventRecord(topic, f"id{n}", stamp, f"src{n % 3}", f'{{"m": "{word} w{n}"}}')


def found(reader: Any, q: str, **filters: Any) -> list[str]:
    return [e.event_id for e in reader.find(EventQuery(search=parse(q), limit=10_000, **filters))]


@pytest.mark.sqlite_only
def test_sqlite_turning_search_on_builds_the_index_in_steps_and_commits_go_on(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db)  # search off: nothing is indexed
    store.commit([[rec(n) for n in range(2_500)]])
    store.close()
    off = SQLiteReader(db)
    with pytest.raises(SearchOff):
        found(off, "common")
    off.close()
    store = SQLiteStore(db, search=True)
    reader = SQLiteReader(db, search=True)
    store.commit([[rec(2_500)]])  # a publish while the index is incomplete is not held up
    with pytest.raises(SearchBuilding, match="2501 stored events are still to be indexed"):
        found(reader, "common")
    steps = 1
    while store.maintain(Retention(), 5_000).more:  # a step indexes at most 1,000 events
        steps += 1
    assert steps == 3
    assert len(found(reader, "common")) == 2_501
    store.commit([[rec(2_501, "fresh")]])  # complete again: commits index their events
    assert found(reader, "fresh") == ["id2501"]
    store.close()
    reader.close()


@pytest.mark.sqlite_only
def test_sqlite_the_index_is_built_in_the_rounds_that_sweep_keys_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a size limit far below the store, upkeep sweeps keys of expired events before it
    deletes more (and returns early): the index build of a store that turned search on goes on
    in those rounds too, and ends with every event left indexed."""
    sweeps: list[int] = []
    stalest = sqlite_keys.stalest_bucket
    monkeypatch.setattr(
        sqlite_keys, "stalest_bucket", lambda cur: sweeps.append(stalest(cur)) or sweeps[-1]
    )
    db, limit = tmp_path / "s.sqlite3", Retention(max_bytes=1_000_000)
    store = SQLiteStore(db)  # search off
    for batch in range(30):
        store.commit([[rec(batch * 1000 + n, "x" * 100) for n in range(1000)]])
    while not sweeps:  # until retention has deleted enough to sweep keys first
        assert store.maintain(limit, 5_000).more
    store.close()
    store = SQLiteStore(db, search=True)
    conn = sqlite3.connect(db)
    try:
        reach, swept = sqlite_search.upto(conn), len(sweeps)
        assert store.maintain(limit, 5_000).more
        assert len(sweeps) == swept + 1  # a round that swept first...
        assert sqlite_search.upto(conn) > reach  # ...and indexed
        while store.maintain(limit, 5_000).more:
            pass
        (stored,) = conn.execute("SELECT count(*) FROM events").fetchone()
        assert conn.execute("SELECT count(*) FROM events_fts").fetchone() == (stored,)
        assert (
            sqlite_search.upto(conn) == conn.execute("SELECT last_seq FROM counters").fetchone()[0]
        )
    finally:
        conn.close()
        store.close()


@pytest.mark.sqlite_only
def test_sqlite_retention_deletes_the_words_with_the_events(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    clock = FakeClock()
    store = SQLiteStore(db, search=True, clock=clock)
    store.commit([[rec(n, "old") for n in range(10)]])
    clock.advance(100)
    store.commit([[rec(n, "new") for n in range(10, 15)]])
    while store.maintain(Retention(max_age_seconds=50), 4).expired:
        pass
    reader = SQLiteReader(db, search=True)
    assert found(reader, "old") == []
    assert found(reader, "new") == [f"id{n}" for n in range(10, 15)]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT min(rowid), count(*) FROM events_fts").fetchone() == (11, 5)
    store.commit([[rec(3, "again")]])  # an expired key is stored again, and found once
    assert found(reader, "again") == ["id3"]
    store.close()
    reader.close()
    conn.close()


def test_postgres_turning_search_on_builds_the_index(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    store.commit([[rec(n) for n in range(1_500)]])
    store.close()
    pg.settle(pg_url)  # reads see what is committed (a transaction elsewhere can hold them back)
    off = PostgresReader(pg_url)
    with pytest.raises(SearchOff):
        found(off, "common")
    off.close()
    store = PostgresStore(pg_url, search=True)
    reader = PostgresReader(pg_url, search=True)
    store.commit([[rec(1_500)]])  # indexed at once: new rows carry their words
    pg.settle(pg_url)
    with pytest.raises(SearchBuilding, match="1500 stored events"):
        found(reader, "common")
    while store.maintain(Retention(), 5_000).more:
        pass
    pg.settle(pg_url)
    assert len(found(reader, "common")) == 1_501
    store.close()
    reader.close()


@pytest.mark.sqlite_only
def test_postgres_q_reads_one_snapshot_so_its_cursor_skips_nothing(pg_url: str) -> None:
    store = PostgresStore(pg_url, search=True)
    store.commit([[rec(1)]])  # seq 1
    store.close()
    pg.settle(pg_url)
    insert = """INSERT INTO events (seq, topic, event_id, timestamp, source, payload, received_at,
        search) VALUES (%s, 't', %s, '2026-11-30T10:00:00Z', 's', %s, '', %s::tsvector)"""
    payload = '{"m": "common"}'
    late = psycopg.connect(pg_url)  # a writer that took seq 10 and commits after seq 11
    late.execute(insert, (10, "late", payload, tsvector_literal("late", payload)))
    with psycopg.connect(pg_url, autocommit=True) as early:
        early.execute(insert, (11, "early", payload, tsvector_literal("early", payload)))
    reader = PostgresReader(pg_url, search=True)
    conn: Any = reader._open()
    execute = conn.execute

    def commit_late_between_statements(sql: str, *args: Any, **kwargs: Any) -> Any:
        result = execute(sql, *args, **kwargs)
        if sql.startswith("SELECT seq FROM events WHERE search @@") and not late.closed:
            late.commit()  # right after q's GIN candidates
            late.close()
        return result

    conn.execute = commit_late_between_statements  # the interleaving, on real connections
    page = reader.find(EventQuery(search=parse("common")))
    assert late.closed
    pg.settle(pg_url)
    rest = reader.find(EventQuery(search=parse("common"), after=page[-1].seq))
    assert [e.event_id for e in page + rest] == ["id1", "late", "early"]
    reader.close()


@pytest.mark.sqlite_only
def test_a_huge_event_is_indexed_as_far_as_a_tsvector_holds_on_both_stores(
    tmp_path: Path, pg_url: str
) -> None:
    # 120,000 distinct words (a payload limit raised to 1 MB): PostgreSQL refused the whole
    # commit ("string is too long for tsvector", a 503 for every publish in the group).
    big = json.dumps({"m": " ".join(f"w{n}" for n in range(120_000))})
    batch = [
        EventRecord("t", "big", "2026-11-30T10:00:00Z", "s", big),
        EventRecord("t", "small", "2026-11-30T10:00:00Z", "s", '{"m": "w1 w119999"}'),
    ]
    sqlite_store = SQLiteStore(tmp_path / "s.sqlite3", search=True)
    sqlite_store.commit([batch])
    sqlite_store.close()
    postgres_store = PostgresStore(pg_url, search=True)
    postgres_store.commit([batch])
    postgres_store.close()
    pg.settle(pg_url)
    for reader in (
        SQLiteReader(tmp_path / "s.sqlite3", search=True),
        PostgresReader(pg_url, search=True),
    ):
        assert found(reader, "w1") == ["big", "small"]
        assert found(reader, "w60000") == ["big"]
        assert found(reader, "w119999") == ["small"]  # past what the big event's index holds
        reader.close()


def test_the_python_matcher_agrees_with_the_stores_on_the_live_side() -> None:
    words = event_words("order-77", '{"msg": "failed login\\nretry", "user": "u123"}')
    assert words == ["order", "77", "msg", "failed", "login", "retry", "user", "u123"]
    assert matches(parse('"failed login" u12*'), words)
    assert not matches(parse('"login failed"'), words)
    assert matches(parse("nothing OR order"), words)
    assert not matches(parse("failed -retry"), words)


# Query plans --------------------------------------------------------------------------------


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({"topic": "t1", "since": "2026-11-30T10:30:00.000000"}, "events_by_time"),
        ({"since": "2026-11-30T10:30:00.000000"}, "events_by_time"),
        ({"source": "src1", "descending": True}, "events_by_source"),
    ],
)
def test_sqlite_filters_use_an_index_not_a_scan(
    tmp_path: Path, filters: dict[str, Any], index: str
) -> None:
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db)
    store.commit([[rec(n, topic=f"t{n % 5}") for n in range(3_000)]])
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("ANALYZE")  # as a long-running store would have: the plan must hold with stats
    conn.close()
    reader = SQLiteReader(db)
    statements: list[str] = []
    reader._conn.set_trace_callback(statements.append)
    assert reader.find(EventQuery(limit=10, **filters))
    select = next(s for s in statements if s.startswith("SELECT"))
    plan = " | ".join(row[3] for row in reader._conn.execute(f"EXPLAIN QUERY PLAN {select}"))
    assert f"USING INDEX {index}" in plan, plan
    reader.close()
    assert "SCAN events" not in plan.replace("SCAN events_fts", ""), plan


def test_postgres_topic_and_since_use_an_index_not_a_scan(pg_url: str) -> None:
    PostgresStore(pg_url).close()  # the schema
    with pg.admin(pg_url) as conn:
        conn.execute(
            """INSERT INTO events (topic, event_id, seq, timestamp, source, payload, received_at)
            SELECT 't' || (n % 20), n::text, n,
                to_char(timestamp '2026-11-30 00:00' + n * interval '1 second',
                        'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                'src', '{}', '' FROM generate_series(1, 50000) AS n"""
        )
        conn.execute("ANALYZE events")
        plan = conn.execute(
            """EXPLAIN SELECT seq FROM events WHERE topic = 't3'
            AND (timestamp COLLATE "C") >= '2026-11-30T13:00:00' ORDER BY seq LIMIT 100"""
        ).fetchall()
    text = " | ".join(row[0] for row in plan)
    assert "Seq Scan" not in text, text
    assert "events_by_time" in text, text


def test_a_frame_splits_its_words_once_for_every_stream_that_filters_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each /subscribe stream with q split every live event again: 17 µs an event and stream
    # on the event loop, 17 s a second for 1,000 streams (the limit) at 1,000 events/s.
    split: list[str] = []

    def counted(event_id: str, payload: str) -> list[str]:
        split.append(event_id)
        return event_words(event_id, payload)

    monkeypatch.setattr(sse, "event_words", counted)
    frame = sse.encode(
        StoredEvent(1, "t", "e1", "2026-11-30T10:00:00Z", "s", '{"m": "login failed"}', "r")
    )
    streams = [EventQuery(search=parse(q)) for q in ("login", "failed -retry", "nothing")] * 100
    assert [s.admits(frame.event, frame.words) for s in streams] == [True, True, False] * 100
    assert split == ["e1"]
