"""Every setting is read: each one set to a value other than its default, and its effect seen.

``tests/test_config.py`` shows the Config carries every value from a flag and from the
environment; here the component that owns each setting shows it received it, by behaving
differently than it would with the default. A setting added to the Config without a row in
``OBSERVED`` fails ``test_every_setting_is_observed_somewhere``.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import signal
import socket
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from aggregator.config import Config
from aggregator.service import Running, serve
from aggregator.store import open_integrity_check, open_store
from tests.conftest import Server, open_server
from tests.sse import open_stream
from tests.support import ROOT, ServerProcess, event, wait_for
from tests.wal import TransactionCounter

DEFAULTS = Config()

# Settings whose non-default effect another file already observes (the test sets the setting
# and its outcome would differ with the default): file, test.
ELSEWHERE = {
    "publish_token": ("test_access.py", "test_tokens_guard_publish_and_reads_but_not_health"),
    "read_token": ("test_access.py", "test_tokens_guard_publish_and_reads_but_not_health"),
    "max_subscribers": ("test_subscribe.py", "test_subscribers_beyond_the_limit_get_503"),
    "subscriber_buffer_events": (
        "test_subscribe.py",
        "test_a_stalled_subscriber_does_not_delay_publishes_and_replays_when_it_reads_again",
    ),
    "send_timeout_seconds": (
        "test_connections.py",
        "test_a_peer_that_stops_reading_is_disconnected_after_the_send_timeout",
    ),
    "max_offset": ("test_hardening.py", "test_offset_is_capped_with_a_message_naming_the_limit"),
    "max_topics": (
        "test_hardening.py",
        "test_topics_beyond_the_limit_are_refused_with_the_limit_named",
    ),
    "database_url": (
        "test_postgres.py",
        "test_events_over_http_hold_back_a_row_until_the_smaller_seq_commits",
    ),
    "stall_seconds": (
        "test_stopping.py",
        "test_a_store_call_that_never_returns_is_unhealthy_and_sigterm_ends_it",
    ),
    "retention_seconds": ("test_retention_server.py", "test_by_age_with_a_subscriber_attached"),
    "retention_bytes": ("test_retention_server.py", "test_by_size_under_concurrent_publishing"),
    "syslog_buffer_bytes": (
        "test_syslog_hostile.py",
        "test_a_sender_faster_than_the_store_is_slowed_not_buffered",
    ),
    "syslog_max_connections": (
        "test_syslog_hostile.py",
        "test_connections_beyond_the_maximum_wait_to_be_accepted",
    ),
    "search": ("test_search.py", "test_sqlite_and_postgres_give_the_same_results"),
    "read_process": ("test_reads.py", "test_the_read_process_answers_as_the_server_does"),
    # Both ports: every test of tests/test_syslog.py runs on a door that turns them on.
    "syslog_tcp_port": ("syslog.py", "syslog_server"),
    "syslog_udp_port": ("syslog.py", "syslog_server"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def metric(server: Server, name: str) -> float:
    for line in (await server.client.get("/metrics")).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


async def publish_all(server: Server, bodies: list[Any]) -> list[int]:
    """Publish each body concurrently; the statuses in the order of ``bodies``."""
    statuses = [0] * len(bodies)

    async def one(i: int) -> None:
        statuses[i] = (await server.publish(bodies[i])).status_code

    async with trio.open_nursery() as nursery:
        for i in range(len(bodies)):
            nursery.start_soon(one, i)
    return statuses


# --- each check runs with its one setting changed ------------------------------------------------


async def check_host(tmp_path: Path) -> None:
    async with open_server(tmp_path, host="127.0.0.2") as server:
        assert server.running.url.startswith("http://127.0.0.2:")
        assert (await server.client.get("/livez")).status_code == 200


async def check_port(tmp_path: Path) -> None:
    port = free_port()
    async with open_server(tmp_path, port=port) as server:
        assert server.running.port == port
        assert (await server.client.get("/livez")).status_code == 200


async def check_data_dir(tmp_path: Path) -> None:
    async with open_server(tmp_path / "elsewhere") as server:
        assert (await server.publish(event())).status_code == 200
    assert (tmp_path / "elsewhere" / "aggregator.sqlite3").stat().st_size > 0


async def check_workers(tmp_path: Path) -> None:
    # While the writer waits for a lock, each worker holds one request; the rest queue.
    async with open_server(tmp_path, workers=2) as server:
        release = server.lock_out_writer()
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(server.publish, event(event_id=str(i)))
            await trio.testing.wait_all_tasks_blocked()
            depth = await metric(server, "aggregator_ingest_queue_depth")
            release()
    assert depth == 6 - 2


async def check_queue_size(tmp_path: Path) -> None:
    async with open_server(tmp_path, queue_size=2, workers=1) as server:
        release = server.lock_out_writer()
        held: list[int] = []

        async def hold(i: int) -> None:
            held.append((await server.publish(event(event_id=str(i)))).status_code)

        async with trio.open_nursery() as nursery:
            for i in range(3):  # one with the worker, two in the queue
                nursery.start_soon(hold, i)
                await trio.testing.wait_all_tasks_blocked()
            shed = [(await server.publish(event(event_id=f"x{i}"))).status_code for i in range(4)]
            release()
    assert shed == [429] * 4 and held == [200] * 3


async def check_max_txn_events(tmp_path: Path, frozen_wal: None) -> None:
    async with open_server(tmp_path, max_txn_events=3) as server:
        transactions = TransactionCounter(server.config.database_path)
        release = server.lock_out_writer()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                publish_all,
                server,
                [[event(event_id=f"{i}-{j}") for j in range(2)] for i in range(4)],
            )
            await trio.testing.wait_all_tasks_blocked()  # one in the writer, three waiting
            release()
        writer = server.running.writer.statistics()
        committed = transactions.count()
    # 2 + 2 > 3: each request is a transaction of its own (the default would merge three).
    assert writer.transactions == committed == 4
    assert writer.max_requests_per_transaction == 1


async def check_max_body_bytes(tmp_path: Path) -> None:
    async with open_server(tmp_path, max_body_bytes=300) as server:
        small = await server.publish(event())
        big = await server.publish([event(event_id=str(i)) for i in range(5)])
    assert small.status_code == 200
    assert big.status_code == 413 and "300" in big.json()["message"]


async def check_max_batch_events(tmp_path: Path) -> None:
    async with open_server(tmp_path, max_batch_events=2) as server:
        two = await server.publish([event(event_id=str(i)) for i in range(2)])
        three = await server.publish([event(event_id=f"x{i}") for i in range(3)])
    assert two.status_code == 200
    assert three.status_code == 413 and "the limit is 2" in three.json()["message"]


async def check_max_payload_bytes(tmp_path: Path) -> None:
    async with open_server(tmp_path, max_payload_bytes=16) as server:
        fits = await server.publish(event(payload={"k": 1}))
        over = await server.publish(event(event_id="2", payload={"k": "x" * 20}))
    assert fits.status_code == 200
    assert over.status_code == 422 and over.json()["details"][0]["field"] == "payload"


async def check_read_timeout_seconds(tmp_path: Path) -> None:
    async with open_server(tmp_path, read_timeout_seconds=0.2) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.running.port)
        async with stream:
            await stream.send_all(
                b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n["
            )
            with trio.fail_after(3):  # the default would answer after 10 s
                answer = await stream.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 408")


async def check_keep_alive_seconds(tmp_path: Path) -> None:
    async with open_server(tmp_path, keep_alive_seconds=0.2) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.running.port)
        async with stream:
            with trio.fail_after(3):  # the default would close it after 5 s
                assert await stream.receive_some(65536) == b""


async def check_readers(tmp_path: Path) -> None:
    def connections(db: Path) -> int:
        """Open descriptors of this process on the database file."""
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if _target(fd) == str(db.resolve()))

    counts = []
    for readers in (1, 3):
        # No integrity check: its connection, open for a moment after start-up, would count.
        settings = {"readers": readers, "integrity_check": "off"}
        async with open_server(tmp_path / str(readers), **settings) as server:
            counts.append(connections(server.config.database_path))
    assert counts[1] - counts[0] == 2


async def check_integrity_check(tmp_path: Path) -> None:
    # Off: nothing checks the store and /readyz says so (by default: pending, running, passed).
    async with open_server(tmp_path, integrity_check="off") as server:
        ready = (await server.client.get("/readyz")).json()
    assert ready == {"status": "ok", "integrity_check": "off"}
    full = open_integrity_check(Config(data_dir=tmp_path, integrity_check="full"))
    assert full is not None and full.pragma == "integrity_check"  # quick_check by default
    await trio.to_thread.run_sync(full.run)  # the store passes it


def _target(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return ""


async def check_shutdown_grace_seconds(tmp_path: Path) -> None:
    # A request whose body never comes holds shutdown until the grace ends; with the default
    # grace, the 10 s read timeout would answer it 408 first.
    config = Config(port=0, data_dir=tmp_path, shutdown_grace_seconds=0.2)
    shutdown = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(partial(serve, config, shutdown=shutdown))
            stream = await trio.open_tcp_stream("127.0.0.1", running.port)
            await stream.send_all(
                b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n["
            )
            await trio.testing.wait_all_tasks_blocked()
            shutdown.set()
            answer = await stream.receive_some(65536)
        await stream.aclose()
    assert not answer.startswith(b"HTTP/1.1 408")


async def check_heartbeat_seconds(tmp_path: Path) -> None:
    async with (
        open_server(tmp_path, heartbeat_seconds=0.05) as server,
        open_stream(server.running.url) as stream,
    ):
        with trio.fail_after(3):  # the default is 15 s
            message = await stream.next()
    assert "heartbeat" in message.comments


async def check_subscriber_buffer_bytes(tmp_path: Path) -> None:
    # One event over the bytes a subscriber may buffer: it lags at once (by events it would not).
    async with open_server(tmp_path, subscriber_buffer_bytes=1000) as server:
        hub = server.running.hub
        subscription = hub.subscribe(None)
        assert (await server.publish(event(payload={"x": "y" * 5000}))).status_code == 200
        await hub.wait_fanned_out(1)
        assert subscription.lagged


async def check_replay_cache_bytes(tmp_path: Path) -> None:
    # Two complete blocks of about 200 KB each replayed; the cache keeps what fits its bytes.
    async with open_server(tmp_path, replay_cache_bytes=300_000) as server:
        for n in range(2):
            batch = [event(event_id=f"{n}-{i}", payload={"x": "y" * 30}) for i in range(1000)]
            assert (await server.publish(batch)).status_code == 200
        await server.running.hub.wait_fanned_out(2000)
        async with open_stream(server.running.url, after=0) as stream:
            assert len(await stream.events(2000)) == 2000
        replay = server.running.hub.replay
        assert replay.reads == 2
        assert 0 < replay.kept_bytes <= 300_000


async def check_probe_seconds(tmp_path: Path) -> None:
    # A transaction fails (a trigger another connection adds); once it is gone, health comes
    # back with no request at all, at the writer's next probe.
    async with open_server(tmp_path, probe_seconds=0.02) as server:
        other = sqlite3.connect(server.config.database_path, isolation_level=None)
        other.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'x'); END"
        )
        assert (await server.publish(event())).status_code == 503
        assert (await server.client.get("/health")).status_code == 503
        other.execute("DROP TRIGGER fail")
        other.close()
        with trio.fail_after(0.9):  # the default probes once a second
            while (await server.client.get("/health")).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.01)  # sleep-ok: polls the server's health with a deadline


async def check_tail_poll_seconds(tmp_path: Path, pg_url: str) -> None:
    # What another process commits reaches this one's subscribers at the next poll.
    async with (
        open_server(tmp_path / "a", database_url=pg_url, tail_poll_seconds=0.02) as a,
        open_server(tmp_path / "b", database_url=pg_url) as b,
        open_stream(a.running.url) as stream,
    ):
        seen = []
        for event_id in ("first", "second"):
            assert (await b.publish(event(event_id=event_id))).status_code == 200
            # The first arrives at a poll; the second within less than the default's period.
            with trio.fail_after(3 if event_id == "first" else 0.5):
                (message,) = await stream.events(1)
            assert message.data is not None
            seen.append(message.data["event_id"])
    assert seen == ["first", "second"]


async def check_cache_mib(tmp_path: Path) -> None:
    store = await trio.to_thread.run_sync(open_store, Config(data_dir=tmp_path, cache_mib=8))
    try:
        (size,) = store._conn.execute("PRAGMA cache_size").fetchone()  # type: ignore[attr-defined]
    finally:
        store.close()
    assert size == -8 * 1024


async def check_synchronous(tmp_path: Path) -> None:
    store = await trio.to_thread.run_sync(
        open_store, Config(data_dir=tmp_path, synchronous="normal")
    )
    try:
        (mode,) = store._conn.execute("PRAGMA synchronous").fetchone()  # type: ignore[attr-defined]
    finally:
        store.close()
    assert mode == 1  # NORMAL (FULL is 2)


async def check_log_level(tmp_path: Path) -> None:
    # At warning, the start-up lines (info) are not written; the server still serves.
    port = free_port()
    server = ServerProcess(
        ["--port", str(port), "--data-dir", str(tmp_path), "--log-level", "warning"]
    )

    def serving() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/livez").status_code == 200
        except httpx.TransportError:
            assert server.proc.poll() is None, server.log()
            return False

    try:
        await trio.to_thread.run_sync(partial(wait_for, serving, "the server to serve"))
    finally:
        server.proc.send_signal(signal.SIGTERM)
        code = await trio.to_thread.run_sync(server.proc.wait, 30)
    assert code == 0
    assert " INFO " not in server.log() and "listening on" not in server.log()


CHECKS: dict[str, Callable[..., Any]] = {
    name.removeprefix("check_"): check
    for name, check in dict(globals()).items()
    if name.startswith("check_")
}


def test_every_setting_is_observed_somewhere() -> None:
    fields = {field.name for field in dataclasses.fields(Config)}
    assert set(CHECKS) | set(ELSEWHERE) == fields
    assert not set(CHECKS) & set(ELSEWHERE)
    for name, (file, test) in ELSEWHERE.items():
        tree = ast.parse((ROOT / "tests" / file).read_text())
        [function] = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == test
        ]
        source = ast.unparse(function)
        assert name in source or Config.flag_name(name) in source, (
            f"{file}::{test} does not set {name}"
        )


@pytest.mark.trio
@pytest.mark.parametrize("name", sorted(CHECKS))
async def test_a_setting_changes_what_its_owner_does(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    check = CHECKS[name]
    # A check's parameters after tmp_path are fixtures (pg_url, frozen_wal).
    names = check.__code__.co_varnames[1 : check.__code__.co_argcount]
    extra = {fixture: request.getfixturevalue(fixture) for fixture in names}
    with trio.fail_after(30):
        await check(tmp_path, **extra)
