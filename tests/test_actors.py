"""The writer and worker actors, driven through their channels against a real SQLite store."""

from __future__ import annotations

import json
import random
import sqlite3
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from aggregator.actors.monitor import WriterMonitor
from aggregator.actors.workers import run_worker
from aggregator.actors.writer import run_writer
from aggregator.decoders.publish import decode_publish
from aggregator.messages import (
    Accepted,
    EventRecord,
    Limits,
    PublishOutcome,
    Submission,
    Unavailable,
    WriteOutcome,
    WriteRequest,
)
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from tests.support import event

pytestmark = pytest.mark.trio
LIMITS = Limits(max_body_bytes=1 << 20, max_batch_events=1000, max_payload_bytes=65536)


def rec(topic: str, event_id: str, payload: str = "{}") -> EventRecord:
    return EventRecord(topic, event_id, "2026-11-21T10:00:00Z", "src", payload)


async def write(
    inbox: trio.MemorySendChannel[WriteRequest], events: list[EventRecord]
) -> WriteOutcome:
    reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](1)
    await inbox.send(WriteRequest(events, reply_send))
    return await reply_recv.receive()


async def test_waiting_requests_are_group_committed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db")
    monitor = WriterMonitor()
    send, recv = trio.open_memory_channel[WriteRequest](100)
    outcomes: list[WriteOutcome] = []

    async def publisher(i: int) -> None:
        outcomes.append(await write(send, [rec("t", str(i)), rec("t", str(i + 1))]))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as publishers:
                for i in range(50):
                    publishers.start_soon(publisher, i)
                await trio.testing.wait_all_tasks_blocked()  # all 50 wait in the inbox
                nursery.start_soon(partial(run_writer, recv, store, monitor, max_txn_events=10_000))
            await send.aclose()
    stats = monitor.statistics()
    assert stats.requests == 50
    assert stats.transactions < stats.requests
    assert stats.max_requests_per_transaction > 1
    assert sum(o.stored for o in outcomes if isinstance(o, Accepted)) == 51
    assert SQLiteReader(tmp_path / "db").counters()[:3] == (100, 51, 49)


async def test_transaction_cap_never_splits_a_request(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db")
    monitor = WriterMonitor()
    send, recv = trio.open_memory_channel[WriteRequest](100)
    outcomes: list[WriteOutcome] = []

    async def publisher(i: int) -> None:
        outcomes.append(await write(send, [rec("t", f"{i}-{j}") for j in range(7)]))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as publishers:
                for i in range(6):
                    publishers.start_soon(publisher, i)
                await trio.testing.wait_all_tasks_blocked()
                # A cap below one request's size: each request still commits whole, alone.
                nursery.start_soon(partial(run_writer, recv, store, monitor, max_txn_events=5))
            await send.aclose()
    assert monitor.statistics().transactions == 6
    assert outcomes == [Accepted(7, 7, 0)] * 6


async def test_a_failing_transaction_answers_every_request_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    store = SQLiteStore(db)
    store.commit([[rec("t", "seed")]])
    pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
    store.execute(f"PRAGMA max_page_count = {pages}")  # the database is now "full"
    monitor = WriterMonitor()
    send, recv = trio.open_memory_channel[WriteRequest](100)
    big = json.dumps({"x": "y" * 4000})
    outcomes: list[WriteOutcome] = []

    async def publisher(i: int) -> None:
        outcomes.append(await write(send, [rec("t", f"{i}-{j}", big) for j in range(5)]))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as publishers:
                for i in range(10):
                    publishers.start_soon(publisher, i)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(partial(run_writer, recv, store, monitor, max_txn_events=10_000))
            assert all(isinstance(o, Unavailable) and "full" in o.reason for o in outcomes)
            assert monitor.statistics().last_error is not None
            assert SQLiteReader(db).counters()[:3] == (1, 1, 0)  # nothing of them stored

            store.execute("PRAGMA max_page_count = 1073741823")  # space returns
            assert await write(send, [rec("t", "after")]) == Accepted(1, 1, 0)
            await send.aclose()
    stats = monitor.statistics()
    assert stats.failed_transactions >= 1 and stats.last_error is None
    assert SQLiteReader(db).counters()[:3] == (2, 2, 0)


async def test_n_workers_overlapping_keys_store_each_key_once(tmp_path: Path) -> None:
    db = tmp_path / "db"
    store = SQLiteStore(db)
    monitor = WriterMonitor()
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](64)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](8)
    rng = random.Random(7)
    keys = [(f"topic{k % 5}", f"id-{k}") for k in range(300)]
    totals = {"accepted": 0, "stored": 0, "duplicates": 0}
    sent = 0

    async def submitter(n: int) -> None:
        nonlocal sent
        for _ in range(10):
            batch = [event(t, e) for t, e in rng.sample(keys, 20)]
            reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
            await ingest_send.send(
                Submission(
                    json.dumps(batch).encode(),
                    {"content-type": "application/json"},
                    decode_publish,
                    reply_send,
                )
            )
            sent += len(batch)
            outcome = await reply_recv.receive()
            assert isinstance(outcome, Accepted)
            totals["accepted"] += outcome.accepted
            totals["stored"] += outcome.stored
            totals["duplicates"] += outcome.duplicates

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_writer, write_recv, store, monitor, max_txn_events=10_000)
            )
            async with write_send, ingest_recv:
                for _ in range(8):
                    await nursery.start(run_worker, ingest_recv.clone(), write_send.clone(), LIMITS)
            async with ingest_send, trio.open_nursery() as publishers:
                for n in range(20):
                    publishers.start_soon(submitter, n)
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT count(*), count(DISTINCT topic || '/' || event_id) FROM events")
    count, distinct = rows.fetchone()
    assert count == distinct == totals["stored"]
    assert totals["accepted"] == sent == 20 * 10 * 20
    received, unique, duplicates, *_ = SQLiteReader(db).counters()
    assert (received, unique, duplicates) == (sent, count, sent - count)
    assert monitor.statistics().running is False  # the cascade closed the writer


async def test_worker_answers_a_rejection_without_writing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db")
    monitor = WriterMonitor()
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](1)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_writer, write_recv, store, monitor, max_txn_events=100))
            await nursery.start(run_worker, ingest_recv, write_send, LIMITS)
            reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
            body = json.dumps([event(event_id="ok"), event(timestamp="yesterday")]).encode()
            await ingest_send.send(Submission(body, {}, decode_publish, reply_send))
            outcome = await reply_recv.receive()
            await ingest_send.aclose()
    assert getattr(outcome, "status", None) == 422
    assert monitor.statistics().requests == 0
    assert SQLiteReader(tmp_path / "db").counters()[:3] == (0, 0, 0)
