"""The PostgreSQL backend: the store on its own, paging across writers, several processes on one
database, kill -9 of one of them. The contract suite runs on PostgreSQL too (``[postgres]``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
import trio

from aggregator.config import ConfigError, load_config
from aggregator.messages import EventRecord, StoredEvent
from aggregator.store import Retention, StoreMismatch
from aggregator.store.pg_schema import SCHEMA_VERSION
from aggregator.store.postgres import PostgresReader, PostgresStore
from bench import postgres as bench_postgres
from tests import pg
from tests.conftest import open_server
from tests.sse import open_stream
from tests.support import ROOT, ServerProcess, event
from tests.test_retention import FakeClock


def rec(topic: str, event_id: str, source: str = "src") -> EventRecord:
    return EventRecord(topic, event_id, "2026-11-21T10:00:00Z", source, "{}")


def seqs(rows: list[StoredEvent]) -> list[int]:
    return [row.seq for row in rows]


@contextmanager
def stores(url: str, n: int) -> Iterator[list[PostgresStore]]:
    with ExitStack() as stack:
        opened = []
        for _ in range(n):
            store = PostgresStore(url)
            stack.callback(store.close)
            opened.append(store)
        yield opened


# The store on its own ----------------------------------------------------------------------------


def test_start_up_migrates_once_and_reopening_keeps_everything(pg_url: str) -> None:
    with stores(pg_url, 2) as (first, second):
        assert first.shard != second.shard  # each live writer owns a counter shard
        first.commit([[rec("a", "1")]])
        result = second.commit([[rec("a", "1"), rec("a", "2")]])
    assert result.counts == [(1, 1)]
    with pg.admin(pg_url) as conn:
        assert conn.execute("SELECT version FROM aggregator_schema").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (2,)


def test_commit_dedups_within_and_across_batches_first_copy_wins(pg_url: str) -> None:
    with stores(pg_url, 1) as (store,):
        result = store.commit(
            [
                [rec("t", "x", "first"), rec("t", "x", "second"), rec("u", "x")],
                [rec("t", "x", "third"), rec("t", "y")],
            ]
        )
        again = store.commit([[rec("t", "y"), rec("t", "z")]])
    assert result.counts == [(2, 1), (1, 1)] and result.stored == 3
    assert result.stored_flags == [[True, False, True], [False, True]]
    assert again.counts == [(1, 1)] and again.stored_flags == [[False, True]]
    with pg.admin(pg_url) as conn:
        rows = conn.execute("SELECT seq, topic, event_id, source FROM events ORDER BY seq")
        stored = {(topic, event_id, source): seq for seq, topic, event_id, source in rows}
    # In request order; the first copy of a key wins.
    assert list(stored) == [("t", "x", "first"), ("u", "x", "src"), ("t", "y", "src"),
                            ("t", "z", "src")]  # fmt: skip
    by_key = {(topic, event_id): seq for (topic, event_id, _), seq in stored.items()}
    pg.settle(pg_url)  # readable whatever else the cluster runs (issue 21)
    reader = PostgresReader(pg_url)
    try:
        assert reader.counters() == (7, 4, 3, ["t", "u"], 0)
        assert [tuple(t) for t in reader.topics()] == [
            ("t", 3, 3, by_key["t", "z"], 0),
            ("u", 1, 0, by_key["u", "x"], 0),
        ]
        assert [e.source for e in reader.events("t", 0, 10, 0)] == ["first", "src", "src"]
    finally:
        reader.close()


def test_retention_by_age_deletes_the_oldest_and_forgets_their_keys(pg_url: str) -> None:
    clock = FakeClock()
    first, second = PostgresStore(pg_url, clock=clock), PostgresStore(pg_url, clock=clock)
    try:
        first.commit([[rec("t", "old-1"), rec("u", "old-2"), rec("t", "old-1")]])
        clock.advance(30)
        second.commit([[rec("t", "young")]])
        clock.advance(45)  # the first commit is 75 s old, the second 45 s
        hour = Retention(max_age_seconds=60)
        # Two processes step at once: each event is deleted, and counted, by one of them.
        steps = [first.maintain(hour, 10), second.maintain(hour, 10)]
        assert sum(step.expired for step in steps) == 2
        assert [s.expired for s in (first.maintain(hour, 10), second.maintain(hour, 10))] == [0, 0]
        again = first.commit([[rec("t", "old-1"), rec("t", "young")]])
        assert again.stored_flags == [[True, False]]  # the key went with its event
    finally:
        first.close()
        second.close()
    pg.settle(pg_url)  # an open transaction elsewhere on the cluster holds the paging horizon
    reader = PostgresReader(pg_url)
    try:
        assert [e.event_id for e in reader.events(None, 0, 10, 0)] == ["young", "old-1"]
        assert reader.counters() == (6, 4, 2, ["t"], 2)  # cumulative; "u" has nothing stored now
        assert [(t.topic, t.stored, t.expired) for t in reader.topics()] == [
            ("t", 3, 1),
            ("u", 1, 1),
        ]
    finally:
        reader.close()


def test_a_size_limit_is_refused_with_postgresql(pg_url: str) -> None:
    with pytest.raises(ConfigError, match="AGGREGATOR_RETENTION_BYTES applies to the SQLite"):
        load_config(["--database-url", pg_url, "--retention-bytes", "1000"])


def test_nul_and_backslashes_round_trip_and_stay_distinct(pg_url: str) -> None:
    ids = ["a\x00b", "a\\0b", "a\\\\0b", "a\\", "\x00"]  # distinct, and alike once escaped badly
    with stores(pg_url, 1) as (store,):
        result = store.commit([[rec("t", i, source=i) for i in ids]])
        again = store.commit([[rec("t", i) for i in ids]])
    assert result.counts == [(5, 0)] and again.counts == [(0, 5)]
    pg.settle(pg_url)
    reader = PostgresReader(pg_url)
    try:
        assert [(e.event_id, e.source) for e in reader.events(None, 0, 10, 0)] == [
            (i, i) for i in ids
        ]
    finally:
        reader.close()


def test_foreign_tables_and_a_newer_schema_are_refused(pg_database: str) -> None:
    schema, url = pg.create_schema(pg_database)
    try:
        with pg.admin(url) as conn:
            conn.execute("CREATE TABLE events (x int)")
        with pytest.raises(StoreMismatch, match="no aggregator schema"):
            PostgresStore(url)
        with pg.admin(url) as conn:
            conn.execute("DROP TABLE events")
        PostgresStore(url).close()
        with pg.admin(url) as conn:
            conn.execute("UPDATE aggregator_schema SET version = version + 1")
        with pytest.raises(StoreMismatch, match="newer than"):
            PostgresStore(url)
    finally:
        pg.drop_schema(pg_database, schema)


# Paging across writers ---------------------------------------------------------------------------


def test_a_smaller_seq_that_commits_late_is_never_skipped(pg_url: str) -> None:
    """Writer A holds seq 2 uncommitted while writer B commits seq 3. A reader that handed out 3
    now would page past 2 for good; it must hand out neither until A commits, then both."""
    reader = PostgresReader(pg_url)
    try:
        with stores(pg_url, 2) as (a, b), pg.admin(pg_url) as naive:
            a.commit([[rec("t", "early")]])  # seq 1
            pg.settle(pg_url)  # seq 1 readable, whatever else the cluster runs
            with a.transaction():
                slow = a.write([[rec("t", "slow")]])
                fast = b.commit([[rec("t", "fast")]])
                assert slow.counts == fast.counts == [(1, 0)]
                # The interleaving really happened: a plain seq query already sees 3 without 2.
                plain = "SELECT seq FROM events WHERE seq > 1 ORDER BY seq"
                assert naive.execute(plain).fetchall() == [(3,)]
                assert seqs(reader.events(None, 0, 10, 0)) == [1]
                assert seqs(reader.events("t", 0, 10, 0)) == [1]
                assert reader.events(None, 1, 10, 0) == []
            # A has committed: both, in seq order, from the cursor the reader gave out.
            pg.settle(pg_url)
            after = reader.events(None, 1, 10, 0)
        assert [(e.seq, e.event_id) for e in after] == [(2, "slow"), (3, "fast")]
        assert seqs(reader.events("t", 1, 10, 0)) == [2, 3]
    finally:
        reader.close()


def test_a_rolled_back_writer_leaves_a_gap_that_does_not_block_paging(pg_url: str) -> None:
    reader = PostgresReader(pg_url)
    try:
        with stores(pg_url, 2) as (a, b):

            class Abort(Exception):
                pass

            with pytest.raises(Abort), a.transaction():
                a.write([[rec("t", "lost")]])  # seq 1, then rolled back
                b.commit([[rec("t", "kept")]])  # seq 2
                assert reader.events(None, 0, 10, 0) == []
                raise Abort
            pg.settle(pg_url)
            assert [(e.seq, e.event_id) for e in reader.events(None, 0, 10, 0)] == [(2, "kept")]
    finally:
        reader.close()


@pytest.mark.trio
async def test_events_over_http_hold_back_a_row_until_the_smaller_seq_commits(
    pg_url: str, tmp_path: Any
) -> None:
    """The same interleaving through the front: another process's writer holds seq 1 open."""
    async with open_server(tmp_path, database_url=pg_url) as server:
        with stores(pg_url, 1) as (other,), trio.fail_after(30):
            with other.transaction():
                other.write([[rec("t", "slow")]])  # seq 1, uncommitted
                # Posted directly: Server.publish would wait for the horizon this holds back.
                published = await server.client.post("/publish", json=event("t", "fast"))
                held = await server.client.get("/events", params={"topic": "t"})
            await trio.to_thread.run_sync(pg.settle, pg_url)
            released = await server.client.get("/events", params={"topic": "t", "after": 0})
    assert published.json()["stored"] == 1
    assert held.json() == [] and "Link" not in held.headers
    assert [(e["seq"], e["event_id"]) for e in released.json()] == [(1, "slow"), (2, "fast")]


@pytest.mark.trio
async def test_a_read_right_after_a_publish_waits_out_a_transaction_open_elsewhere(
    pg_url: str, tmp_path: Any
) -> None:
    """Issue 21: a transaction open anywhere on the cluster, here in another database, holds the
    paging horizon below a fresh commit, so a read right after a 200 may see nothing. The tests'
    ``Server.publish`` returns once the horizon has passed; this holds one open until the
    publish is found waiting for it, then ends it."""
    async with open_server(tmp_path, database_url=pg_url) as server:
        with pg.admin() as elsewhere, trio.fail_after(30):  # the cluster's `postgres` database
            elsewhere.execute("BEGIN")
            elsewhere.execute("SELECT pg_current_xact_id()")  # an xid, as a writing transaction

            async def end_it_once_the_publish_waits() -> None:
                await server.held_back.wait()
                elsewhere.execute("COMMIT")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(end_it_once_the_publish_waits)
                published = await server.publish(event("t", "1"))
                stored = await server.all_events()
                nursery.cancel_scope.cancel()
    assert published.status_code == 200
    assert server.held_back.is_set()  # the publish did meet the open transaction
    assert [e["event_id"] for e in stored] == ["1"]


@pytest.mark.trio
async def test_a_subscriber_sees_other_processes_commits_in_seq_order(
    pg_url: str, tmp_path: Any
) -> None:
    """Process A streams what process B commits (the tail's poll), and a row that B commits
    while a smaller seq is still open elsewhere is held back until that one commits too."""
    async with (
        open_server(tmp_path / "a", database_url=pg_url, tail_poll_seconds=0.05) as a,
        open_server(tmp_path / "b", database_url=pg_url) as b,
    ):
        with stores(pg_url, 1) as (other,), trio.fail_after(30):
            async with open_stream(a.running.url, after=0) as stream:
                await b.publish(event("t", "from-b"))
                (first,) = await stream.events(1)
                with other.transaction():
                    other.write([[rec("t", "slow")]])  # smaller seq, still uncommitted
                    # Larger seq, committed; posted directly, as Server.publish would wait
                    # for the horizon this transaction holds back.
                    await b.client.post("/publish", json=event("t", "fast"))
                    held = await a.client.get("/events", params={"after": first.id})
                rest = await stream.events(2)
    assert first.data is not None and first.data["event_id"] == "from-b"
    assert held.json() == []  # nothing is handed out past the open transaction
    assert [m.data["event_id"] for m in rest if m.data] == ["slow", "fast"]
    assert [m.id for m in rest] == sorted(m.id for m in rest if m.id is not None)


# The server on PostgreSQL -------------------------------------------------------------------------


@pytest.mark.trio
async def test_a_lost_writer_connection_is_503_then_reconnects(pg_url: str, tmp_path: Any) -> None:
    async with open_server(tmp_path, database_url=pg_url) as server:
        with trio.fail_after(30):
            assert (await server.publish(event(event_id="1"))).status_code == 200
            with pg.admin(pg_url) as conn:
                killed = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'aggregator-writer' "
                    "AND datname = current_database()"
                ).fetchall()
            assert killed == [(True,)]
            failed = await server.publish(event(event_id="2"))
            health = await server.client.get("/health")
            ok = await server.publish(event(event_id="2"))
            healthy = await server.client.get("/health")
            stats = await server.stats()
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "1"
    assert health.status_code == 503
    assert ok.json() == {"accepted": 1, "stored": 1, "duplicates": 0}
    assert healthy.status_code == 200
    assert (stats["received"], stats["unique_processed"]) == (2, 2)


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("mysql://u:secret@h/db", 2, "must start with postgresql:// or postgres://"),
        ("postgresql://u:secret@127.0.0.1:1/db", 1, "cannot connect to postgresql://u:***@"),
    ],
)
def test_a_bad_or_unreachable_database_is_one_line(url: str, code: int, message: str) -> None:
    result = pg.start_up(url)
    assert result.returncode == code
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


# Three processes on one database ------------------------------------------------------------------


@contextmanager
def processes(url: str, n: int) -> Iterator[list[ServerProcess]]:
    """``n`` servers on one database, started together (they race to migrate it)."""
    args = ["--port", "0", "--workers", "8", "--readers", "2", "--database-url", url]
    servers = [ServerProcess(args) for _ in range(n)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.kill()


def keys_of(batch: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["topic"], e["event_id"]) for e in batch}


def overlapping_batch(client: int, i: int) -> list[dict[str, Any]]:
    """20 events from a shared pool of 2,000 keys: neighbouring clients send the same keys."""
    ids = [(i * 20 + j + client * 7) % 2000 for j in range(20)]
    return [event(f"t{k % 3}", str(k)) for k in ids]


def db_rows(url: str) -> list[tuple[str, str]]:
    with pg.admin(url) as conn:
        return conn.execute("SELECT topic, event_id FROM events").fetchall()


@pytest.mark.slow
@pytest.mark.trio
async def test_three_processes_overlapping_keys_store_one_row_each_and_agree(pg_url: str) -> None:
    clients, batches = 9, 40
    sent: set[tuple[str, str]] = set()
    with processes(pg_url, 3) as servers, trio.fail_after(120):

        async def client(n: int) -> None:
            async with httpx.AsyncClient(base_url=servers[n % 3].url, timeout=30) as http:
                for i in range(batches):
                    batch = overlapping_batch(n, i)
                    response = await http.post("/publish", json=batch)
                    assert response.status_code == 200, response.text
                    sent.update(keys_of(batch))

        async with trio.open_nursery() as nursery:
            for n in range(clients):
                nursery.start_soon(client, n)
        with pg.admin(pg_url) as horizon:  # every 200 readable, whatever else the cluster runs
            await pg.wait_for_horizon(horizon, None)
        async with httpx.AsyncClient(timeout=30) as http:
            stats = [(await http.get(s.url + "/stats")).json() for s in servers]
            pages = [(await http.get(s.url + "/events?limit=1000")).json() for s in servers]
    rows = await trio.to_thread.run_sync(db_rows, pg_url)
    assert len(rows) == len(set(rows)) and set(rows) == sent
    counts = [{k: v for k, v in s.items() if k != "uptime"} for s in stats]
    assert counts[0] == counts[1] == counts[2]
    assert counts[0] == {
        "received": clients * batches * 20,
        "unique_processed": len(sent),
        "duplicate_dropped": clients * batches * 20 - len(sent),
        "topics": ["t0", "t1", "t2"],
    }
    assert pages[0] == pages[1] == pages[2] and len(pages[0]) == len(sent) == 856


@pytest.mark.slow
@pytest.mark.trio
async def test_kill_9_of_one_process_the_others_serve_and_no_ack_is_lost(pg_url: str) -> None:
    acked: set[tuple[str, str]] = set()
    enough, stop = trio.Event(), trio.Event()
    after_kill: set[tuple[str, str]] = set()
    with processes(pg_url, 3) as servers, trio.fail_after(120):
        alive = [True, True, True]

        async def client(n: int) -> None:
            """Publish to process n % 3; on no answer or 503, resend the batch to the next."""
            target = n % 3
            async with httpx.AsyncClient(timeout=10) as http:
                for i in range(100_000):
                    if stop.is_set():
                        return
                    batch = [*overlapping_batch(n, i), event("own", f"{n}-{i}")]
                    while True:
                        try:
                            response = await http.post(servers[target].url + "/publish", json=batch)
                        except httpx.TransportError:
                            response = None
                        if response is not None and response.status_code == 200:
                            break
                        target = (target + 1) % 3
                    acked.update(keys_of(batch))
                    if not alive[0]:
                        after_kill.update(keys_of(batch))
                    if len(acked) >= 1500:
                        enough.set()
                    if len(after_kill) >= 500:
                        stop.set()

        async with trio.open_nursery() as nursery:
            for n in range(9):
                nursery.start_soon(client, n)
            await enough.wait()
            servers[0].proc.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
            alive[0] = False
        await trio.to_thread.run_sync(servers[0].kill)
        async with httpx.AsyncClient(timeout=30) as http:
            health = [(await http.get(s.url + "/health")).status_code for s in servers[1:]]
            stats = [(await http.get(s.url + "/stats")).json() for s in servers[1:]]
    assert servers[0].proc.returncode == -signal.SIGKILL
    assert health == [200, 200]
    rows = await trio.to_thread.run_sync(db_rows, pg_url)
    assert len(rows) == len(set(rows)), "an event is stored twice"
    assert acked <= set(rows), f"{len(acked - set(rows))} acknowledged events lost"
    for s in stats:
        assert s["unique_processed"] == len(rows)
        assert s["received"] == s["unique_processed"] + s["duplicate_dropped"]
    assert stats[0]["received"] == stats[1]["received"]


# Without PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.parametrize("required", [False, True])
def test_without_postgresql_a_run_warns_at_the_end_or_in_ci_fails(required: bool) -> None:
    """Issues 20 and 21: skipped PostgreSQL tests must not pass for a green run unnoticed."""
    env = {k: v for k, v in os.environ.items() if k != "TEST_REQUIRE_POSTGRES"}
    env["TEST_POSTGRES_URL"] = "postgresql://postgres@127.0.0.1:1/postgres"  # nothing listens
    if required:
        env["TEST_REQUIRE_POSTGRES"] = "1"
    picked = [
        "tests/test_postgres.py::test_commit_dedups_within_and_across_batches_first_copy_wins",
        "tests/test_postgres.py::test_nul_and_backslashes_round_trip_and_stay_distinct",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *picked],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = result.stdout.strip().splitlines()
    if required:
        assert result.returncode == 1, result.stdout
        assert "2 errors" in summary[-1]
        assert "TEST_REQUIRE_POSTGRES is set, so that is a failure" in result.stdout
    else:
        assert result.returncode == 0, result.stdout
        assert "2 skipped" in summary[-1]
        assert "2 PostgreSQL tests were SKIPPED: PostgreSQL is not reachable" in summary[-2]


def test_bench_postgres_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: ``make bench-postgres`` runs batch 100; its --help says so, for each option."""
    with pytest.raises(SystemExit) as exited:
        bench_postgres.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exited.value.code == 0
    for option in ("--events N events published per row", "--clients N concurrent publishers",
                   "--batch N events per POST /publish request"):  # fmt: skip
        assert option in text
    assert "(default: 100)" in text and "(default: 60000)" in text and "(default: 12)" in text
