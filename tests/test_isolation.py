"""Fault isolation: a bug met while handling one request answers that request alone.

Each actor gets a deliberate fault injected where it would meet one (a decoder, the store inside a
transaction, the tail's read, a route, a stream) and must answer the request that met it with a
500 naming a request id, count it in ``aggregator_internal_errors_total{stage}``, log it once
with its traceback, and go on serving. The writer with a connection in an unknown state is the
one crash-only actor: it stops the process with a one-line reason and a non-zero exit.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from aggregator.actors.hub import Hub, run_tail
from aggregator.actors.monitor import WriterMonitor
from aggregator.actors.readers import open_reader_pool
from aggregator.actors.writer import run_writer
from aggregator.front import app as http_module
from aggregator.front import publish as publish_module
from aggregator.front import stream as stream_module
from aggregator.incidents import Incidents
from aggregator.messages import (
    Accepted,
    EventRecord,
    Internal,
    Unavailable,
    WriteOutcome,
    WriteRequest,
)
from aggregator.store import CommitResult, Retention, StoreBroken, Upkeep
from aggregator.store.base import commit_result
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from tests.conftest import open_server
from tests.sse import SSEParser
from tests.support import ROOT, ServerProcess, event, running_server
from tests.writing import write, write_as_one_group

# The request that stopped the whole server (issue 18): NDJSON whose one line is a truncated
# wrapper object. The typed decode stopped at the unknown key before it saw the truncation.
REPRODUCER = b'{"events": [{"topic": "a"'
REQUEST_ID = re.compile(r"request id ([0-9a-f]{12})")


def incidents_counted(metrics_text: str, stage: str) -> float:
    match = re.search(
        rf'^aggregator_internal_errors_total{{stage="{stage}"}} (\S+)$', metrics_text, re.M
    )
    assert match, f"no internal-errors series for stage {stage}"
    return float(match.group(1))


def test_the_30_byte_reproducer_is_a_400_and_the_server_keeps_serving(tmp_path: Path) -> None:
    with running_server(tmp_path) as server, httpx.Client(base_url=server.url) as http:
        response = http.post(
            "/publish", content=REPRODUCER, headers={"Content-Type": "application/x-ndjson"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "malformed"
        assert "not valid JSON" in response.json()["message"]
        assert http.get("/health").status_code == 200
        assert http.post("/publish", json=event()).json() == {
            "accepted": 1,
            "stored": 1,
            "duplicates": 0,
        }
        assert server.proc.poll() is None


@pytest.mark.trio
async def test_a_decoder_bug_answers_500_for_that_request_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = publish_module.decode_publish

    def buggy(body: bytes, *args: Any) -> list[EventRecord]:
        if b"poison" in body:
            raise KeyError("a bug in the decoder")
        return real(body, *args)

    monkeypatch.setattr(publish_module, "decode_publish", buggy)
    with trio.fail_after(20), caplog.at_level(logging.ERROR):
        async with open_server(tmp_path) as server:
            bad = await server.publish([event(event_id="ok-1"), event(event_id="poison")])
            good = await server.publish(event(event_id="ok-2"))
            metrics = (await server.client.get("/metrics")).text
            stats = await server.stats()
    assert bad.status_code == 500
    assert bad.json()["error"] == "internal"
    assert "nothing of the request was stored" in bad.json()["message"]
    request_id = REQUEST_ID.search(bad.json()["message"])
    assert request_id is not None
    assert good.status_code == 200
    assert stats["received"] == stats["unique_processed"] == 1  # ok-1 was not stored
    assert incidents_counted(metrics, "decode") == 1
    logged = [r for r in caplog.records if request_id.group(1) in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with the traceback


class Poisoned(str):
    """A topic that fails inside the store's transaction, after its rows were inserted."""

    __slots__ = ()

    def __hash__(self) -> int:
        raise RuntimeError("a bug met inside the transaction")


def rec(topic: str, event_id: str) -> EventRecord:
    return EventRecord(topic, event_id, "2026-11-21T10:00:00Z", "src", "{}")


@pytest.mark.trio
async def test_a_bug_in_a_group_commit_fails_only_the_request_that_met_it(tmp_path: Path) -> None:
    db = tmp_path / "db"
    store = SQLiteStore(db)
    monitor = WriterMonitor()
    counted: list[str] = []
    requests = {  # all three wait: one group
        "before": [rec("t", "1"), rec("t", "2")],
        "bad": [rec(Poisoned("t"), "3")],
        "after": [rec("t", "4"), rec("t", "4")],
    }
    writer = partial(
        run_writer,
        store=store,
        monitor=monitor,
        max_txn_events=100,
        incidents=Incidents(counted.append),
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer)
            assert await write(send, [rec("t", "5")]) == Accepted(1, 1, 0)  # it goes on
            await send.aclose()
    assert outcomes["before"] == Accepted(2, 2, 0)
    assert outcomes["after"] == Accepted(2, 1, 1)
    bad = outcomes["bad"]
    assert isinstance(bad, Internal) and bad.stage == "writer" and bad.stored_nothing
    assert counted == ["writer"]
    reader = SQLiteReader(db)
    assert sorted(row.event_id for row in reader.events(None, 0, 100, 0)) == ["1", "2", "4", "5"]
    received, unique, duplicates, *_ = reader.counters()
    assert (received, unique, duplicates) == (5, 4, 1)  # the bad request left no trace
    assert monitor.statistics().last_error is None  # one request's bug is not an outage


class BrokenStore:
    """A store whose connection ends up in an unknown state (a failed rollback)."""

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        raise StoreBroken("rollback after disk I/O error failed: disk I/O error")

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        return Upkeep(0, more=False)

    def probe(self, reserve_bytes: int) -> None:
        raise AssertionError("not reached")

    def close(self) -> None:
        pass


def broken_writer(inbox: trio.MemoryReceiveChannel[WriteRequest], stopping: trio.Event) -> Any:
    """A writer whose store's connection breaks at its first commit."""
    return partial(
        run_writer, inbox, BrokenStore(), WriterMonitor(), max_txn_events=10, on_broken=stopping.set
    )


@pytest.mark.trio
async def test_a_broken_connection_stops_the_writer_after_answering_everyone() -> None:
    send, recv = trio.open_memory_channel[WriteRequest](10)
    stopping = trio.Event()
    outcomes: list[WriteOutcome] = []

    async def publisher(event_id: str) -> None:
        outcomes.append(await write(send, [rec("t", event_id)]))

    with trio.fail_after(10), pytest.RaisesGroup(StoreBroken, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(broken_writer(recv, stopping))
            await publisher("first")  # meets the broken connection
            assert stopping.is_set()
            await publisher("later")  # refused without touching the store
            await send.aclose()  # the writer raises once its inbox is closed
    assert len(outcomes) == 2
    assert all(isinstance(o, Unavailable) for o in outcomes)
    assert outcomes[0].stored_nothing is False  # type: ignore[union-attr]
    assert "stopping after a store failure" in outcomes[1].reason  # type: ignore[union-attr]


# A real server process whose store breaks on one event: the fault is injected by the test's
# own launcher, which patches the store before it runs the aggregator's main().
BREAKING_LAUNCHER = """
import sys
from aggregator.store import sqlite, StoreBroken
from aggregator.__main__ import main
commit = sqlite.SQLiteStore.commit
def breaking(self, batches):
    if any(r.event_id == "break-the-store" for b in batches for r in b):
        raise StoreBroken("rollback after disk I/O error failed: disk I/O error")
    return commit(self, batches)
sqlite.SQLiteStore.commit = breaking
main(sys.argv[1:])
"""


def test_a_broken_store_stops_the_process_with_a_one_line_reason(tmp_path: Path) -> None:
    server = ServerProcess(
        ["--port", "0", "--data-dir", str(tmp_path)],
        command=[sys.executable, "-c", BREAKING_LAUNCHER],
    )
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/publish", json=event(event_id="kept")).status_code == 200
            response = http.post("/publish", json=event(event_id="break-the-store"))
        code = server.proc.wait(timeout=30)
    finally:
        server.kill()
    assert response.status_code == 503
    assert "may or may not have been stored" in response.json()["message"]
    assert code == 1
    last = server.lines[-1]
    assert last.startswith("aggregator: fatal: ") and "unknown state" in last, server.log()
    assert "Traceback" not in server.log()
    # Restarted by a supervisor, the store holds what was acknowledged.
    with running_server(tmp_path) as again, httpx.Client(base_url=again.url) as http:
        assert [e["event_id"] for e in http.get("/events").json()] == ["kept"]


@pytest.mark.trio
async def test_a_bug_in_a_read_route_is_a_500_for_that_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def buggy(row: Any) -> Any:
        raise ValueError("a bug in the route")

    with trio.fail_after(20):
        async with open_server(tmp_path) as server:
            assert (await server.publish(event())).status_code == 200
            monkeypatch.setattr(http_module, "event_out", buggy)
            broken = await server.client.get("/events")
            monkeypatch.undo()
            fixed = await server.client.get("/events")
            metrics = (await server.client.get("/metrics")).text
    assert broken.status_code == 500
    assert broken.json()["error"] == "internal" and REQUEST_ID.search(broken.json()["message"])
    assert fixed.status_code == 200 and len(fixed.json()) == 1
    assert incidents_counted(metrics, "route") == 1


@pytest.mark.trio
async def test_a_bug_in_a_stream_ends_that_stream_with_a_last_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def buggy(rows: Any) -> Any:
        raise ValueError("a bug in the stream")

    with trio.fail_after(20):
        async with open_server(tmp_path) as server:
            assert (await server.publish(event())).status_code == 200
            monkeypatch.setattr(stream_module, "encode_all", buggy)
            async with server.client.stream("GET", "/subscribe") as response:
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
            monkeypatch.undo()
            metrics = (await server.client.get("/metrics")).text
            assert (await server.client.get("/health")).status_code == 200
    assert b": internal error (request id " in body
    assert incidents_counted(metrics, "subscribe") == 1


class FailingOnce:
    """A reader pool whose next read of events fails with a bug, once."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.armed = False

    async def run(self, call: Any) -> Any:
        if self.armed and getattr(call, "func", None) is not None:
            self.armed = False
            raise RuntimeError("a bug in the tail's read")
        return await self._pool.run(call)


@pytest.mark.trio
async def test_a_bug_in_the_tail_is_counted_and_subscribers_miss_nothing(tmp_path: Path) -> None:
    db = tmp_path / "aggregator.sqlite3"
    store = SQLiteStore(db)
    counted: list[str] = []
    with trio.fail_after(20):
        async with open_reader_pool(partial(SQLiteReader, db), 2) as readers:
            hub = Hub(buffer_events=100)
            pool = FailingOnce(readers)
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(run_tail, hub, pool, incidents=Incidents(counted.append))  # type: ignore[arg-type]
                )
                body = stream_module.stream_events(hub, readers, None, 0, heartbeat_seconds=1e9)
                async with aclosing(body) as chunks:
                    await anext(chunks)  # subscribed
                    pool.armed = True
                    store.commit([[rec("t", "1")]])
                    hub.notify()  # this round of the tail meets the bug
                    await trio.testing.wait_all_tasks_blocked()
                    assert counted == ["tail"]
                    store.commit([[rec("t", "2")]])
                    hub.notify()  # the next round reads both from the same cursor
                    parser = SSEParser()
                    ids: list[int] = []
                    while len(ids) < 2:
                        ids += [m.id for m in parser.feed((await anext(chunks)).decode()) if m.id]
                hub.close()
    store.close()
    assert ids == [1, 2]


def test_docs_state_the_per_actor_rule() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text()
    assert "Fault isolation" in text
    for actor in ("worker", "writer", "tail", "route", "subscribe"):
        assert actor in text


def test_the_reproducer_is_rejected_by_the_decoder_itself() -> None:
    from aggregator.decoders.publish import decode_publish
    from aggregator.messages import Limits, Rejection

    with pytest.raises(Rejection) as raised:
        decode_publish(
            REPRODUCER, {"content-type": "application/x-ndjson"}, Limits(1 << 20, 1000, 65536)
        )
    assert raised.value.status == 400
    assert raised.value.message == "line 1 is not valid JSON: Input data was truncated"


class BugThenBroken:
    """A store on which a group commit meets a bug, and the request ``broken`` alone then finds
    the connection in an unknown state."""

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        if len(batches) > 1:
            raise RuntimeError("a bug met in a group commit")
        if batches[0][0].event_id == "broken":
            raise StoreBroken("rollback after disk I/O error failed: disk I/O error")
        return commit_result([[True] * len(batches[0])])

    def probe(self, reserve_bytes: int) -> None:
        raise AssertionError("not reached")

    def close(self) -> None:
        pass


@pytest.mark.trio
async def test_a_broken_connection_met_in_a_retry_answers_the_rest_of_the_group() -> None:
    """Retried one by one after a bug, a group whose second request finds the connection broken:
    the third, never retried, was left waiting for ever, so the workers never ended and the
    process never stopped (attack on issue 18)."""
    requests = {event_id: [rec("t", event_id)] for event_id in ("first", "broken", "third")}
    writer = partial(run_writer, store=BugThenBroken(), monitor=WriterMonitor(), max_txn_events=10)
    with trio.fail_after(10), pytest.RaisesGroup(StoreBroken, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer, in_order=True)
            await send.aclose()  # the writer raises once its inbox is closed
    assert outcomes["first"] == Accepted(1, 1, 0)
    assert isinstance(outcomes["broken"], Unavailable)
    third = outcomes["third"]
    assert isinstance(third, Unavailable) and "stopping after a store failure" in third.reason


@pytest.mark.trio
async def test_a_broken_writer_stopped_at_once_still_raises_store_broken() -> None:
    """A second signal cancels the writer while it refuses what is queued: it must still end as
    a broken store (exit 1, restarted by a supervisor), not as a clean stop (exit 0)."""
    send, recv = trio.open_memory_channel[WriteRequest](10)
    stopping = trio.Event()
    with trio.fail_after(10), pytest.RaisesGroup(StoreBroken, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(broken_writer(recv, stopping))
            assert isinstance(await write(send, [rec("t", "1")]), Unavailable)
            assert stopping.is_set()  # it refuses what comes now, until its inbox closes
            nursery.cancel_scope.cancel()  # the second signal


@pytest.mark.trio
async def test_a_subscriber_gone_before_it_took_the_opening_leaves_no_subscription() -> None:
    """The opening was sent outside the stream's ``finally``: a client that went away before it
    read it left its subscription in the hub for good, counted against
    AGGREGATOR_MAX_SUBSCRIBERS (attack on issue 18: ten such clients, six leaked)."""
    hub = Hub(buffer_events=100)
    with trio.fail_after(10):
        body = stream_module.stream_events(hub, None, None, 0, heartbeat_seconds=1e9)  # type: ignore[arg-type]
        async with aclosing(body) as chunks:
            assert await anext(chunks) == stream_module.OPENING
            assert hub.statistics().active == 1
        assert hub.statistics().active == 0  # closed at the opening: unsubscribed
