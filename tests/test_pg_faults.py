"""The PostgreSQL store under faults (issues 19, 20): sessions pinned against inherited settings,
databases it must refuse, locks held elsewhere, lost and unreachable connections, the probe.

Every fault is real: a database-level setting, a LATIN1 database, a row or table lock held by
another session, a trigger that fails inserts with PostgreSQL's own disk-full SQLSTATE, backends
terminated with ``pg_terminate_backend``, packets dropped by the kernel (iptables).
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from aggregator.actors.monitor import WriterMonitor
from aggregator.actors.writer import run_writer
from aggregator.messages import Accepted, EventRecord, Unavailable, WriteOutcome, WriteRequest
from aggregator.store import CommitResult, StoreMismatch, StoreUnavailable, pg_connect
from aggregator.store.pg_schema import NAMESPACE
from aggregator.store.postgres import PostgresReader, PostgresStore
from tests import pg
from tests.conftest import Server, open_server
from tests.support import event


def rec(topic: str, event_id: str) -> EventRecord:
    return EventRecord(topic, event_id, "2026-11-21T10:00:00Z", "src", "{}")


def rows(url: str) -> list[tuple[str, str]]:
    with pg.admin(url) as conn:
        return conn.execute("SELECT topic, event_id FROM events ORDER BY seq").fetchall()


@pytest.fixture
def scratch_database(pg_database: str) -> Iterator[str]:
    """A database of this test's own (for database-level settings), dropped after."""
    url = pg.create_database()
    try:
        yield url
    finally:
        pg.drop_database(url)


@pytest.fixture
def short_lock_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers opened from now on give up on a lock after 300 ms, not 5 s."""
    monkeypatch.setattr(pg_connect, "WRITER_LOCK_TIMEOUT", "300ms")


def disk_full_on_insert(conn: psycopg.Connection[Any]) -> None:
    """Every INSERT into ``events`` fails as a full disk does (SQLSTATE 53100, disk_full);
    ``attempts`` counts them (a sequence: it advances even in a transaction rolled back)."""
    conn.execute("CREATE SEQUENCE attempts")
    conn.execute(
        """CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            PERFORM nextval('attempts');
            RAISE EXCEPTION 'could not extend file: No space left on device'
                USING ERRCODE = 'disk_full';
        END $$"""
    )
    conn.execute(
        "CREATE TRIGGER disk_full BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()"
    )


# Sessions pinned: inherited settings must not weaken a promise ------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("ALTER DATABASE {db} SET synchronous_commit = off", "on"),
        ("ALTER DATABASE {db} SET synchronous_commit = local", "on"),
        ("PGOPTIONS=-csynchronous_commit=off", "on"),
        ("ALTER DATABASE {db} SET synchronous_commit = remote_apply", "remote_apply"),  # stronger
    ],
)
def test_the_writer_commits_durably_whatever_synchronous_commit_it_inherits(
    scratch_database: str, monkeypatch: pytest.MonkeyPatch, setting: str, expected: str
) -> None:
    db = scratch_database.rsplit("/", 1)[1]
    if setting.startswith("PGOPTIONS="):
        monkeypatch.setenv("PGOPTIONS", setting.split("=", 1)[1])
    else:
        with pg.admin() as conn:
            conn.execute(setting.format(db=f'"{db}"'))
    with pg.admin(scratch_database) as plain:  # the setting really reaches new sessions
        inherited = plain.execute("SHOW synchronous_commit").fetchone()
    assert inherited is not None and inherited[0] == setting.rsplit("=", 1)[1].strip()
    store = PostgresStore(scratch_database)
    try:
        # The writer's own session, as its COMMITs run.
        shown = store._connection().execute("SHOW synchronous_commit").fetchone()
    finally:
        store.close()
    assert shown == (expected,)


def test_the_writer_session_has_its_lock_and_idle_in_transaction_limits(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        conn = store._connection()
        lock = conn.execute("SHOW lock_timeout").fetchone()
        idle = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
    finally:
        store.close()
    assert lock == ("5s",)
    # A writer frozen inside a transaction (a stopped process, a cut network) would hold its
    # keys' locks and the paging horizon of every reader of the cluster; the server ends it.
    assert idle == ("10s",)


def test_every_connection_notices_a_dead_peer_in_seconds(pg_url: str) -> None:
    """TCP keepalives and TCP_USER_TIMEOUT on the sockets themselves, writer and reader."""
    store, reader = PostgresStore(pg_url), PostgresReader(pg_url)
    try:
        for conn in (store._connection(), reader._open()):
            with socket.socket(fileno=conn.fileno()) as sock:
                try:
                    options = (
                        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                    )
                finally:
                    sock.detach()  # the socket stays psycopg's
            assert options == (1, 5, 2, 3, 10_000)
            # The server's side: it ends the session of a client that is gone.
            server_side = conn.execute(
                "SELECT current_setting('tcp_keepalives_idle'), "
                "current_setting('tcp_keepalives_interval'), "
                "current_setting('tcp_keepalives_count'), current_setting('tcp_user_timeout')"
            ).fetchone()
            assert server_side == ("5", "2", "3", "10000")
    finally:
        store.close()
        reader.close()


def test_a_read_is_cancelled_after_its_time_limit(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read waiting on a lock (VACUUM FULL, ALTER TABLE) or running long ends with 503."""
    monkeypatch.setattr(pg_connect, "READ_TIMEOUT", "300ms")
    PostgresStore(pg_url).close()
    reader = PostgresReader(pg_url)
    try:
        with pg.admin(pg_url) as holder, ThreadPoolExecutor(1) as pool:
            holder.execute("BEGIN")
            holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            read = pool.submit(reader.events, None, 0, 10, 0)
            try:
                with pytest.raises(StoreUnavailable, match=r"statement timeout.*limited to 300ms"):
                    read.result(timeout=10)
            except FutureTimeout:
                pytest.fail("the read was still waiting after 10 s")
            finally:
                holder.execute("ROLLBACK")
        assert reader.events(None, 0, 10, 0) == []  # the connection is still usable
    finally:
        reader.close()


# Encodings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
def test_a_database_not_in_utf8_is_refused_at_start_up_and_left_untouched(
    pg_database: str, encoding: str
) -> None:
    url = pg.create_database(encoding)
    try:
        result = pg.start_up(url)
        with pg.admin(url) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            ).fetchone()
    finally:
        pg.drop_database(url)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"is a {encoding} database; the aggregator needs UTF8" in result.stderr
    assert "Traceback" not in result.stderr
    assert tables == (0,)


@pytest.mark.trio
async def test_text_goes_as_utf8_whatever_client_encoding_the_url_asks_for(
    pg_url: str, tmp_path: Path
) -> None:
    async with open_server(tmp_path, database_url=f"{pg_url}&client_encoding=LATIN1") as server:
        with trio.fail_after(30):
            published = await server.publish(event("prices", "price-€", source="日本"))
            stored = await server.all_events()
    assert published.status_code == 200, published.text
    assert [(e["event_id"], e["source"]) for e in stored] == [("price-€", "日本")]


def test_any_exception_in_a_transaction_leaves_none_open(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that raises while the connection is busy (here: a result left unread, so psycopg's
    ROLLBACK cannot even be sent) must not leave the transaction, or its key locks, open."""
    store = PostgresStore(pg_url)
    count = PostgresStore._count

    def buggy_count(self: PostgresStore, conn: psycopg.Connection[Any], *args: Any) -> Any:
        conn.pgconn.send_query(b"SELECT 1")
        raise RuntimeError("a bug in the middle of a transaction")

    try:
        monkeypatch.setattr(PostgresStore, "_count", buggy_count)
        with pytest.raises(RuntimeError, match="a bug"):
            store.commit([[rec("t", "a")]])
        monkeypatch.setattr(PostgresStore, "_count", count)
        with pg.admin(pg_url) as conn:
            open_ = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'aggregator-writer' AND xact_start IS NOT NULL"
            ).fetchone()
        assert open_ == (0,)
        assert store.commit([[rec("t", "a")]]).counts == [(1, 0)]  # nothing was kept or locked
    finally:
        store.close()
    assert rows(pg_url) == [("t", "a")]


# Locks held elsewhere: one key's lock fails only the requests that need it ------------------------


class Recording:
    """A WriteStore that records each commit: how many requests, and how it ended."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.calls: list[tuple[int, str]] = []

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        try:
            result = self.store.commit(batches)
        except Exception as exc:
            self.calls.append((len(batches), type(exc).__name__))
            raise
        self.calls.append((len(batches), "ok"))
        return result

    def probe(self, reserve_bytes: int) -> None:
        self.store.probe(reserve_bytes)

    def close(self) -> None:
        self.store.close()


async def group_commit(store: Recording, requests: list[list[EventRecord]]) -> list[WriteOutcome]:
    """Queue every request first, then start the writer: it takes them as one group. Closes
    the store at the end."""
    send, recv = trio.open_memory_channel[WriteRequest](len(requests))
    replies = []
    for events in requests:
        reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](1)
        send.send_nowait(WriteRequest(events, reply_send))
        replies.append(reply_recv)
    try:
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, recv, store, WriterMonitor(), max_txn_events=1000)
            await nursery.start(writer)
            outcomes = [await reply.receive() for reply in replies]
            await send.aclose()
    finally:
        store.close()
    return outcomes


REQUESTS = [[rec("t", "a")], [rec("t", "held"), rec("t", "b")], [rec("u", "c")], [rec("t", "d")]]


@pytest.mark.trio
@pytest.mark.usefixtures("short_lock_timeout")
async def test_a_key_locked_elsewhere_fails_only_the_request_that_holds_it(pg_url: str) -> None:
    store = Recording(PostgresStore(pg_url))
    with pg.admin(pg_url) as holder, trio.fail_after(30):
        holder.execute("BEGIN")
        holder.execute(
            "INSERT INTO events (topic, event_id, seq, timestamp, source, payload, received_at) "
            "VALUES ('t', 'held', 0, '', '', '{}', '')"
        )
        try:
            outcomes = await group_commit(store, REQUESTS)
        finally:
            holder.execute("ROLLBACK")
    assert [type(o) for o in outcomes] == [Accepted, Unavailable, Accepted, Accepted]
    assert isinstance(outcomes[1], Unavailable) and "lock timeout" in outcomes[1].reason
    # One group first; then each request alone, the one with the held key failing again.
    assert store.calls == [
        (4, "StoreContention"),
        (1, "ok"),
        (1, "StoreContention"),
        (1, "ok"),
        (1, "ok"),
    ]
    assert rows(pg_url) == [("t", "a"), ("u", "c"), ("t", "d")]


@pytest.mark.trio
@pytest.mark.usefixtures("short_lock_timeout")
@pytest.mark.parametrize("fault", ["table lock", "counter row lock", "seq lock", "disk full"])
async def test_a_store_wide_failure_is_not_retried_request_by_request(
    pg_url: str, fault: str
) -> None:
    """Every request would fail again, each after its own wait: the group gets its 503 at once."""
    inner = PostgresStore(pg_url)
    inner.commit([[rec("t", "first")]])  # this writer's counter row exists
    store = Recording(inner)
    with pg.admin(pg_url) as holder, trio.fail_after(30):
        if fault == "disk full":
            disk_full_on_insert(holder)
        else:
            holder.execute("BEGIN")
            if fault == "table lock":
                holder.execute("LOCK TABLE events IN SHARE MODE")
            elif fault == "counter row lock":
                holder.execute("SELECT * FROM counters FOR UPDATE")
            else:  # the advisory lock that aggregator_reserve takes to hand out seqs
                holder.execute(
                    "SELECT pg_advisory_xact_lock((%s::bigint << 32) "
                    "| 'events_seq'::regclass::oid::bigint)",
                    (NAMESPACE,),
                )
        try:
            outcomes = await group_commit(store, REQUESTS)
        finally:
            holder.execute(
                "DROP TRIGGER disk_full ON events" if fault == "disk full" else "ROLLBACK"
            )
    assert [type(o) for o in outcomes] == [Unavailable] * 4
    assert store.calls == [(4, "StoreUnavailable")]
    assert rows(pg_url) == [("t", "first")]


# Reads --------------------------------------------------------------------------------------------


@pytest.mark.trio
async def test_a_nul_in_the_topic_is_no_topic_not_an_outage(server: Server) -> None:
    with trio.fail_after(30):
        await server.publish(event("a", "1"))
        response = await server.client.get("/events", params={"topic": "\x00"})
    assert response.status_code == 200 and response.json() == []


@pytest.mark.trio
async def test_reads_survive_lost_connections_with_one_retry_each(
    pg_url: str, tmp_path: Path
) -> None:
    async with open_server(tmp_path, database_url=pg_url, readers=4) as server:
        with trio.fail_after(30):
            assert (await server.publish(event("a", "1"))).status_code == 200
            with pg.admin(pg_url) as conn:
                killed = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'aggregator-reader' "
                    "AND datname = current_database()"
                ).fetchall()
            # Every reader is gone: the clients' four, the probes' and the live tail's.
            assert killed == [(True,)] * 6
            stats = [(await server.client.get("/stats")).status_code for _ in range(6)]
            health = await server.client.get("/health")
            events = await server.client.get("/events")
    assert stats == [200] * 6
    assert health.status_code == 200
    assert [e["event_id"] for e in events.json()] == ["1"]


# The probe: health comes back only when a real write fits -----------------------------------------


@pytest.mark.parametrize("fault", ["disk full", "table lock"])
def test_the_probe_fails_while_writes_fail_and_leaves_nothing_behind(
    pg_url: str, fault: str, short_lock_timeout: None
) -> None:
    store = PostgresStore(pg_url)
    try:
        store.commit([[rec("t", "a")]])
        with pg.admin(pg_url) as holder:
            if fault == "table lock":
                holder.execute("BEGIN")
                holder.execute("LOCK TABLE events IN SHARE MODE")
            else:
                disk_full_on_insert(holder)
            with pytest.raises(StoreUnavailable):
                store.commit([[rec("t", "b")]])
            with pytest.raises(StoreUnavailable):  # it fails as the writes it stands for do
                store.probe(64 * 1024)
            holder.execute(
                "ROLLBACK" if fault == "table lock" else "DROP TRIGGER disk_full ON events"
            )
        store.probe(64 * 1024)
        reader = PostgresReader(pg_url)
        try:
            counters = reader.counters()
        finally:
            reader.close()
    finally:
        store.close()
    assert rows(pg_url) == [("t", "a")]  # the probe's row is gone, the counters untouched
    assert counters[:3] == (1, 1, 0)


@pytest.mark.trio
async def test_health_stays_503_while_inserts_fail_and_returns_when_they_work(
    pg_url: str, tmp_path: Path
) -> None:
    async with open_server(tmp_path, database_url=pg_url, probe_seconds=0.02) as server:
        with trio.fail_after(30):
            with pg.admin(pg_url) as conn:
                disk_full_on_insert(conn)
                failed = await server.publish(event("a", "1"))
                attempts = 0
                health = await server.client.get("/health")
                # Until the writer has probed a few times (or health wrongly came back).
                while attempts < 4 and health.status_code == 503:
                    await trio.sleep(0.02)  # sleep-ok: the writer probes on its own clock
                    row = conn.execute("SELECT last_value FROM attempts").fetchone()
                    attempts = row[0] if row else 0
                    health = await server.client.get("/health")
                conn.execute("DROP TRIGGER disk_full ON events")
                healthy = await server.client.get("/health")
                while healthy.status_code != 200:
                    await trio.sleep(0.02)  # sleep-ok: the writer probes on its own clock
                    healthy = await server.client.get("/health")
            ok = await server.publish(event("a", "1"))
    assert failed.status_code == 503 and "No space left on device" in failed.json()["message"]
    assert health.status_code == 503, "health came back while every insert still failed"
    assert "No space left on device" in health.json()["reason"]
    assert ok.json() == {"accepted": 1, "stored": 1, "duplicates": 0}


# Start-up: a schema holding another program's tables ----------------------------------------------


def test_a_schema_with_another_programs_tables_is_refused_untouched(pg_url: str) -> None:
    with pg.admin(pg_url) as conn:
        conn.execute("CREATE TABLE other_app (id int)")
    with pytest.raises(StoreMismatch, match="has tables other_app but no aggregator schema"):
        PostgresStore(pg_url)
    with pg.admin(pg_url) as conn:
        found = conn.execute("SELECT to_regclass('aggregator_schema')::text").fetchone()
    assert found == (None,)


def test_an_extensions_objects_and_tables_added_later_do_not_count(pg_url: str) -> None:
    """Views an extension put into the schema belong to the database, not to another program;
    a table added beside an existing store does not make it foreign (as with SQLite)."""
    with pg.admin(pg_url) as conn:
        conn.execute("CREATE EXTENSION pg_buffercache")  # a view, in the store's schema
    PostgresStore(pg_url).close()
    with pg.admin(pg_url) as conn:
        conn.execute("CREATE TABLE added_later (id int)")
    PostgresStore(pg_url).close()


# An unreachable database: noticed in seconds, not after the kernel's retransmission time ---------


@contextmanager
def packets_dropped(local_port: int, server_port: int) -> Iterator[None]:
    """The kernel drops every packet of one TCP connection, both ways (iptables): to the
    client, the database host is gone, without a reset or any answer."""
    rules = [
        ["OUTPUT", "--sport", str(local_port), "--dport", str(server_port)],
        ["INPUT", "--sport", str(server_port), "--dport", str(local_port)],
    ]
    added = []
    try:
        for chain, *ports in rules:
            spec = [chain, "-p", "tcp", *ports, "-j", "DROP"]
            subprocess.run(["iptables", "-I", *spec], check=True, capture_output=True)
            added.append(spec)
        yield
    finally:
        for spec in added:
            subprocess.run(["iptables", "-D", *spec], check=True, capture_output=True)


def can_drop_packets() -> bool:
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        return False
    return subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True).returncode == 0


@pytest.mark.trio
async def test_a_cut_off_database_fails_the_commit_in_seconds_and_shutdown_is_not_held(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's connection goes silent mid-commit (a host or network gone). Without
    TCP_USER_TIMEOUT the commit, and shutdown behind it, would wait ~15 minutes of
    retransmissions; here the request is answered 503, the next one reconnects, and the server
    stops at once. Needs root and iptables (.ci/run installs it)."""
    if not can_drop_packets():
        reason = "dropping packets needs root and a working iptables"
        if pg.REQUIRED:
            pytest.fail(f"{reason}; TEST_REQUIRE_POSTGRES is set, so that is a failure")
        pytest.skip(reason)
    fast = {**pg_connect.TCP_PARAMETERS, "tcp_user_timeout": "1000", "keepalives_idle": "1"}
    monkeypatch.setattr(pg_connect, "TCP_PARAMETERS", fast)
    server_port = int(psycopg.conninfo.conninfo_to_dict(pg.ADMIN_URL).get("port") or 5432)
    with trio.fail_after(60):
        async with open_server(tmp_path, database_url=pg_url) as server:
            assert (await server.publish(event("a", "1"))).status_code == 200
            with pg.admin(pg_url) as conn:
                row = conn.execute(
                    "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'aggregator-writer'"
                ).fetchone()
            assert row is not None
            started = trio.current_time()
            try:
                with packets_dropped(row[0], server_port), trio.move_on_after(20):
                    failed = await server.client.post("/publish", json=event("a", "2"))
            finally:  # the old session, if the server has not ended it yet
                with pg.admin(pg_url) as conn:
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND client_port = %s",
                        (row[0],),
                    )
            answered_after = trio.current_time() - started
            ok = await server.publish(event("a", "2"))  # on a new connection
            stopping = trio.current_time()
        stopped_after = trio.current_time() - stopping
    assert answered_after < 10, f"the cut-off commit took {answered_after:.1f} s"
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "1"
    assert ok.json() == {"accepted": 1, "stored": 1, "duplicates": 0}
    assert stopped_after < 10


@contextmanager
def few_descriptors(left: int) -> Iterator[None]:
    """This process can open ``left`` more descriptors (as at ``ulimit -n``) until the block
    ends."""
    lowest_free = os.dup(0)  # the next descriptor's number
    os.close(lowest_free)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + left, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("left", [0, 1])
def test_a_connection_lost_when_descriptors_have_run_out_is_unavailable_not_a_bug(
    pg_url: str, left: int
) -> None:
    """Out of descriptors (EMFILE), psycopg's connect raised a bare OSError once libpq had its
    socket (its wait opens an epoll descriptor: one left): the writer answered publishes 500
    "internal error" and the live tail logged an incident, where the store is only unavailable
    (503, probed until it is back). The reason names the descriptors: with none left, libpq says
    only "connection is bad"."""
    store, reader = PostgresStore(pg_url), PostgresReader(pg_url)
    try:
        store.commit([[rec("t", "a")]])
        reader.head()
        with pg.admin(pg_url) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'aggregator-%' AND datname = current_database()"
            )
        with pytest.raises(StoreUnavailable, match="terminating"):  # the writer finds it lost
            store.commit([[rec("t", "b")]])
        with few_descriptors(left):
            for call in (partial(store.commit, [[rec("t", "b")]]), reader.head):
                with pytest.raises(StoreUnavailable, match="out of file descriptors"):
                    call()
        store.commit([[rec("t", "c")]])  # descriptors free again: it connects
        assert reader.head() == 2
    finally:
        store.close()
        reader.close()
    assert rows(pg_url) == [("t", "a"), ("t", "c")]
