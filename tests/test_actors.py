"""The writer and worker actors, driven through their channels against a real SQLite store."""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from aggregator.actors.monitor import WriterMonitor, WriterStatistics
from aggregator.actors.workers import LATE, THREAD_BODY_BYTES, TopicBudget, run_worker
from aggregator.actors.writer import run_writer
from aggregator.decoders.publish import decode_publish
from aggregator.incidents import Incidents
from aggregator.messages import (
    Accepted,
    Detail,
    EventRecord,
    Internal,
    Limits,
    PublishOutcome,
    Rejection,
    Submission,
    Unavailable,
    WriteOutcome,
    WriteRequest,
)
from aggregator.store import (
    CommitResult,
    StoreBroken,
    StoreContention,
    StoreDamaged,
    StoreUnavailable,
)
from aggregator.store.base import Retention, Upkeep
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from tests.support import event
from tests.wal import TransactionCounter
from tests.writing import write, write_as_one_group

pytestmark = pytest.mark.trio
LIMITS = Limits(max_body_bytes=1 << 20, max_batch_events=1000, max_payload_bytes=65536)


def rec(topic: str, event_id: str, payload: str = "{}") -> EventRecord:
    return EventRecord(topic, event_id, "2026-11-21T10:00:00Z", "src", payload)


async def test_waiting_requests_are_group_committed(tmp_path: Path, frozen_wal: None) -> None:
    store = SQLiteStore(tmp_path / "db")
    transactions = TransactionCounter(tmp_path / "db")  # what reaches the disk, not the monitor
    monitor = WriterMonitor()
    requests = {i: [rec("t", str(i)), rec("t", str(i + 1))] for i in range(50)}
    writer = partial(run_writer, store=store, monitor=monitor, max_txn_events=10_000)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer)
            await send.aclose()
    stats = monitor.statistics()
    # All 50 waited in the inbox before the writer started: one transaction, one fsync.
    assert transactions.count() == 1 == stats.transactions
    assert stats.requests == 50 and stats.max_requests_per_transaction == 50
    assert (stats.events, stats.stored) == (100, 51)
    assert sum(o.stored for o in outcomes.values() if isinstance(o, Accepted)) == 51
    assert SQLiteReader(tmp_path / "db").counters()[:3] == (100, 51, 49)


async def test_transaction_cap_never_splits_a_request(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db")
    monitor = WriterMonitor()
    requests = {i: [rec("t", f"{i}-{j}") for j in range(7)] for i in range(6)}
    # A cap below one request's size: each request still commits whole, alone.
    writer = partial(run_writer, store=store, monitor=monitor, max_txn_events=5)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer)
            await send.aclose()
    assert monitor.statistics().transactions == 6
    assert list(outcomes.values()) == [Accepted(7, 7, 0)] * 6
    assert SQLiteReader(tmp_path / "db").counters()[:3] == (42, 42, 0)


async def test_a_failing_transaction_answers_every_request_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    store = SQLiteStore(db)
    store.commit([[rec("t", "seed")]])
    pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
    store.execute(f"PRAGMA max_page_count = {pages}")  # the database is now "full"
    monitor = WriterMonitor()
    big = json.dumps({"x": "y" * 4000})
    requests = {i: [rec("t", f"{i}-{j}", big) for j in range(5)] for i in range(10)}
    writer = partial(run_writer, store=store, monitor=monitor, max_txn_events=10_000)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer)
            assert all(isinstance(o, Unavailable) and "full" in o.reason for o in outcomes.values())
            assert monitor.statistics().last_error == "database or disk is full (SQLITE_FULL)"
            assert SQLiteReader(db).counters()[:3] == (1, 1, 0)  # nothing of them stored

            store.execute("PRAGMA max_page_count = 1073741823")  # space returns
            assert await write(send, [rec("t", "after")]) == Accepted(1, 1, 0)
            await send.aclose()
    stats = monitor.statistics()
    # One group failed, as one transaction (the full disk is not retried request by request).
    assert stats.failed_transactions == 1 and stats.last_error is None
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


class GatedStore:
    """The real store with a gate in front of ``commit``: the writer's thread stops there until
    the test opens it, so the test sees what the writer did before its transaction began."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.entered = threading.Event()
        self.gate = threading.Event()

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self._store.commit(batches)

    def probe(self, reserve_bytes: int) -> None:
        self._store.probe(reserve_bytes)

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        return self._store.maintain(retention, max_events, reclaim=reclaim)

    def close(self) -> None:
        self._store.close()


async def test_a_request_is_answered_only_once_its_commit_is_visible(tmp_path: Path) -> None:
    db = tmp_path / "db"
    store = GatedStore(SQLiteStore(db))
    send, recv = trio.open_memory_channel[WriteRequest](10)
    reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_writer, recv, store, WriterMonitor(), max_txn_events=100)
            )
            await send.send(WriteRequest([rec("t", "1"), rec("t", "2")], reply_send))
            await trio.to_thread.run_sync(store.entered.wait)
            await trio.testing.wait_all_tasks_blocked()
            # The writer's thread waits before BEGIN: no answer may exist yet.
            with pytest.raises(trio.WouldBlock):
                reply_recv.receive_nowait()
            store.gate.set()
            outcome = await reply_recv.receive()
            # The moment the answer arrives, another connection sees the events and counters.
            reader = SQLiteReader(db)
            seen = [e.event_id for e in reader.events(None, 0, 10, 0)]
            counters = reader.counters()
            await send.aclose()
    assert outcome == Accepted(2, 2, 0)
    assert seen == ["1", "2"]
    assert counters == (2, 2, 0, ["t"], 0)


def submission(
    body: bytes, reply: trio.MemorySendChannel[PublishOutcome], decode: Any = decode_publish
) -> Submission:
    return Submission(body, {"content-type": "application/x-test"}, decode, reply)


async def test_a_worker_answers_its_own_failures_and_goes_on() -> None:
    """A decoder bug is a 500 naming the decode stage; a writer that closes without an answer
    is a 500 that cannot say whether anything was stored; a client that is gone is skipped."""
    recorded: list[str] = []
    incidents = Incidents(recorded.append)
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](10)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](10)

    def buggy(body: bytes, headers: Any, limits: Limits) -> list[EventRecord]:
        raise RuntimeError("a decoder bug")

    def accept(body: bytes, headers: Any, limits: Limits) -> list[EventRecord]:
        return [rec("t", body.decode())]

    async def ask(body: bytes, decode: Any) -> PublishOutcome:
        reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
        await ingest_send.send(submission(body, reply_send, decode))
        return await reply_recv.receive()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_worker, incidents=incidents), ingest_recv, write_send, LIMITS
            )
            failed = await ask(b"x", buggy)
            # The writer takes the request and drops its reply channel unanswered.
            async with trio.open_nursery() as writer:
                writer.start_soon(ask, b"lost", accept)
                request = await write_recv.receive()
                await request.reply.aclose()
            lost_outcome = request.events
            # Clients that went away: their replies are dropped, the worker goes on.
            gone_send, gone_recv = trio.open_memory_channel[PublishOutcome](1)
            await gone_recv.aclose()
            await ingest_send.send(submission(b"", gone_send, buggy))
            closed_send, _ = trio.open_memory_channel[PublishOutcome](1)
            await closed_send.aclose()
            await ingest_send.send(submission(b"", closed_send, buggy))
            assert isinstance(await ask(b"y", buggy), Internal)  # still serving
            await ingest_send.aclose()
    assert isinstance(failed, Internal)
    assert (failed.stage, failed.stored_nothing) == ("decode", True)
    assert len(failed.request_id) == 12
    assert lost_outcome == [rec("t", "lost")]
    assert recorded == ["decode", "worker", "decode", "decode", "decode"]


async def test_a_writer_that_closes_unanswered_is_a_500_that_may_have_stored() -> None:
    recorded: list[str] = []
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](10)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](10)
    reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            worker = partial(run_worker, incidents=Incidents(recorded.append))
            await nursery.start(worker, ingest_recv, write_send, LIMITS)
            body = json.dumps([event(event_id="1"), event(event_id="2")]).encode()
            await ingest_send.send(Submission(body, {}, decode_publish, reply_send))
            request = await write_recv.receive()
            await request.reply.aclose()
            outcome = await reply_recv.receive()
            await ingest_send.aclose()
    assert isinstance(outcome, Internal)
    assert (outcome.stage, outcome.stored_nothing) == ("worker", False)
    assert len(outcome.request_id) == 12
    assert recorded == ["worker"]


async def test_the_probe_is_twice_the_failed_transaction_within_bounds() -> None:
    from aggregator.actors.writer import MAX_PROBE_BYTES, MIN_PROBE_BYTES, _probe_size

    def request(*sizes: int) -> WriteRequest:
        reply, _ = trio.open_memory_channel[WriteOutcome](1)
        return WriteRequest([rec("t", "e", "p" * (n - 25)) for n in sizes], reply)  # n bytes each

    small = request(100)
    assert _probe_size([small]) == MIN_PROBE_BYTES
    assert _probe_size([request(40_000), request(10_000, 10_000)]) == 2 * 60_000
    assert _probe_size([request(9_000_000)]) == MAX_PROBE_BYTES


async def test_the_monitor_starts_at_zero_and_not_running() -> None:
    assert WriterMonitor().statistics() == WriterStatistics(0, 0, 0, 0, 0, 0, False, None)


async def test_the_cap_groups_whole_requests_and_on_commit_follows_stored_events(
    tmp_path: Path, frozen_wal: None
) -> None:
    store = SQLiteStore(tmp_path / "db")
    transactions = TransactionCounter(tmp_path / "db")
    monitor = WriterMonitor()
    commits: list[int] = []
    requests = {i: [rec("t", f"{i}-a"), rec("t", f"{i}-b")] for i in range(6)}
    writer = partial(
        run_writer,
        store=store,
        monitor=monitor,
        max_txn_events=4,
        on_commit=lambda: commits.append(1),
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer)
            # Only duplicates: committed (the counters change) but nothing new to tell.
            assert await write(send, [rec("t", "0-a")]) == Accepted(1, 0, 1)
            await send.aclose()
    stats = monitor.statistics()
    assert transactions.count() == 4 == stats.transactions  # 2 + 2 requests each, then one
    assert stats.max_requests_per_transaction == 2
    assert (stats.requests, stats.events, stats.stored) == (7, 13, 12)
    assert len(commits) == 3
    assert list(outcomes.values()) == [Accepted(2, 2, 0)] * 6


class BuggyStore:
    """The real store, but a request with the event id ``bad`` meets a bug in the commit."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        if any(r.event_id == "bad" for batch in batches for r in batch):
            raise RuntimeError("a bug")
        return self._store.commit(batches)

    def probe(self, reserve_bytes: int) -> None:
        raise AssertionError("a bug is not an outage: no probe")

    def close(self) -> None:
        self._store.close()


async def test_a_bug_in_a_pair_fails_only_its_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = WriterMonitor()
    commits: list[int] = []
    requests = {name: [rec("t", name)] for name in ("good", "bad")}  # one group of two
    writer = partial(
        run_writer,
        store=BuggyStore(SQLiteStore(tmp_path / "db")),
        monitor=monitor,
        max_txn_events=100,
        on_commit=lambda: commits.append(1),
        probe_seconds=0.001,
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer)
            await send.aclose()
    bad = outcomes["bad"]
    assert outcomes["good"] == Accepted(1, 1, 0) and commits == [1]
    assert isinstance(bad, Internal) and (bad.stage, bad.stored_nothing) == ("writer", True)
    assert re.fullmatch("[0-9a-f]{12}", bad.request_id)
    stats = monitor.statistics()
    assert (stats.failed_transactions, stats.transactions, stats.last_error) == (2, 1, None)
    [logged] = [r for r in caplog.records if bad.request_id in r.getMessage()]
    assert "while committing 1 events" in logged.getMessage()
    assert logged.exc_info is not None and str(logged.exc_info[1]) == "a bug"


class BrokenStore:
    """A store whose connection ends up in an unknown state (a failed rollback)."""

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        raise StoreBroken("rollback failed")

    def probe(self, reserve_bytes: int) -> None:
        raise AssertionError("not reached")

    def close(self) -> None:
        pass


async def test_a_broken_store_answers_the_request_that_did_not_fit_too() -> None:
    monitor = WriterMonitor()
    requests = {name: [rec("t", f"{name}-{j}") for j in range(2)] for name in ("a", "b")}
    # A cap of three events: the second request does not fit beside the first, and waits as
    # "pending" when the first fails.
    writer = partial(run_writer, store=BrokenStore(), monitor=monitor, max_txn_events=3)
    with trio.fail_after(10), pytest.RaisesGroup(StoreBroken, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer)
            await send.aclose()
    refusal = "the server is stopping after a store failure: rollback failed"
    assert len(outcomes) == 2
    assert sorted(o.reason for o in outcomes.values() if isinstance(o, Unavailable)) == [
        "rollback failed",
        refusal,
    ]
    assert monitor.statistics().last_error == ("the store's connection is broken: rollback failed")


async def test_the_writer_goes_on_when_a_requester_is_gone(tmp_path: Path) -> None:
    send, recv = trio.open_memory_channel[WriteRequest](10)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, max_txn_events=100)
            await nursery.start(writer, recv, SQLiteStore(tmp_path / "db"), WriterMonitor())
            gone_send, gone_recv = trio.open_memory_channel[WriteOutcome](1)
            await gone_recv.aclose()  # the client disconnected
            await send.send(WriteRequest([rec("t", "1")], gone_send))
            closed_send, _ = trio.open_memory_channel[WriteOutcome](1)
            await closed_send.aclose()
            await send.send(WriteRequest([rec("t", "2")], closed_send))
            assert await write(send, [rec("t", "3")]) == Accepted(1, 1, 0)
            await send.aclose()
    assert SQLiteReader(tmp_path / "db").counters()[:3] == (3, 3, 0)  # committed regardless


@pytest.mark.parametrize("encoding", ["gzip", "snappy", " GZIP "])
async def test_a_compressed_body_is_decoded_off_the_event_loop_however_small(
    encoding: str,
) -> None:
    """A small compressed body can inflate to the body limit (a 9 KiB gzip body of OTLP/JSON
    held the event loop, and /health, for 1.3 s): its size says nothing of its cost."""
    threads: list[threading.Thread] = []

    def decode(body: bytes, headers: Any, limits: Limits) -> list[EventRecord]:
        threads.append(threading.current_thread())
        return [rec("t", body.decode())]

    ingest_send, ingest_recv = trio.open_memory_channel[Submission](10)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](10)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_worker, ingest_recv, write_send, LIMITS)
            for headers in ({"content-encoding": encoding}, {}):
                reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
                await ingest_send.send(Submission(b"small", headers, decode, reply_send))
                request = await write_recv.receive()
                request.reply.send_nowait(Accepted(1, 1, 0))
                assert isinstance(await reply_recv.receive(), Accepted)
            await ingest_send.aclose()
    compressed, plain = threads
    assert compressed is not threading.main_thread()
    assert plain is threading.main_thread()  # a small plain body stays on the loop: cheap


async def test_a_workers_500_names_one_log_line_with_its_error_and_what_it_was_doing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request id of a worker's 500 finds one log line: the stage, what was being done
    (the body's size and media type, the decoder; the events waiting for their commit), and
    the traceback of the error. A worker given no ``incidents`` logs them too."""
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](10)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](10)
    bug = RuntimeError("a decoder bug")

    def buggy(body: bytes, headers: Any, limits: Limits) -> list[EventRecord]:
        raise bug

    def accept(body: bytes, headers: Any, limits: Limits) -> list[EventRecord]:
        return [rec("t", body.decode())]

    async def ask(body: bytes, decode: Any) -> PublishOutcome:
        reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
        await ingest_send.send(submission(body, reply_send, decode))
        return await reply_recv.receive()

    outcomes: list[PublishOutcome] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_worker, ingest_recv, write_send, LIMITS)
            outcomes.append(await ask(b"abc", buggy))
            async with trio.open_nursery() as writer:

                async def lost() -> None:
                    outcomes.append(await ask(b"x", accept))

                writer.start_soon(lost)
                request = await write_recv.receive()
                await request.reply.aclose()  # the writer drops it unanswered
            await ingest_send.aclose()
    decoding, waiting = outcomes
    assert isinstance(decoding, Internal) and isinstance(waiting, Internal)
    [first] = [r for r in caplog.records if decoding.request_id in r.getMessage()]
    assert first.getMessage().startswith(
        f"internal error in decode (request id {decoding.request_id}) while decoding a 3-byte "
        f"body (application/x-test) with <function "
    )
    assert first.exc_info is not None and first.exc_info[1] is bug
    [second] = [r for r in caplog.records if waiting.request_id in r.getMessage()]
    assert second.getMessage() == (
        f"internal error in worker (request id {waiting.request_id}) while waiting for the "
        "commit of 1 events"
    )
    assert second.exc_info is not None and isinstance(second.exc_info[1], trio.EndOfChannel)


class BreaksWhenRetriedStore(BuggyStore):
    """A group meets a bug; retried one by one, ``ok`` commits and ``broken`` finds the
    connection in an unknown state (a failed rollback)."""

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        if len(batches) > 1:
            raise RuntimeError("a bug in the group")
        if batches[0][0].event_id == "broken":
            raise StoreBroken("rollback failed")
        return self._store.commit(batches)


async def test_a_connection_broken_during_retries_refuses_the_rest_once_each(
    tmp_path: Path,
) -> None:
    """Retried alone after a bug in their group, the requests before the broken one keep their
    answer, it gets its 503, and those after it are refused naming the failure: exactly one
    answer each."""
    send, recv = trio.open_memory_channel[WriteRequest](10)
    replies: dict[str, trio.MemoryReceiveChannel[WriteOutcome]] = {}
    for name in ("ok", "broken", "rest"):
        reply_send, replies[name] = trio.open_memory_channel[WriteOutcome](1)
        await send.send(WriteRequest([rec("t", name)], reply_send))
    store = BreaksWhenRetriedStore(SQLiteStore(tmp_path / "db"))
    with trio.fail_after(10), pytest.RaisesGroup(StoreBroken, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(run_writer, max_txn_events=100), recv, store, WriterMonitor()
            )
            await send.aclose()
    outcomes = {name: reply.receive_nowait() for name, reply in replies.items()}
    assert outcomes == {
        "ok": Accepted(1, 1, 0),
        "broken": Unavailable("rollback failed", stored_nothing=False),
        # Its group rolled back and it was never retried: nothing of it was stored.
        "rest": Unavailable("the server is stopping after a store failure: rollback failed"),
    }
    for reply in replies.values():
        with pytest.raises(trio.WouldBlock):  # one answer, not two
            reply.receive_nowait()


async def test_a_request_that_would_pass_the_cap_waits_for_the_next_transaction(
    tmp_path: Path,
) -> None:
    monitor = WriterMonitor()
    requests = {size: [rec("t", f"{size}-{j}") for j in range(size)] for size in (2, 3)}
    store = SQLiteStore(tmp_path / "db")
    writer = partial(run_writer, store=store, monitor=monitor, max_txn_events=4)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer)
            await send.aclose()
    stats = monitor.statistics()
    # 2 + 3 would pass the cap of 4, whichever came first: two transactions.
    assert (stats.transactions, stats.max_requests_per_transaction) == (2, 1)
    assert sorted(o.stored for o in outcomes.values() if isinstance(o, Accepted)) == [2, 3]


class LockedRowStore(BuggyStore):
    """A request with the event id ``locked`` waits too long for a row another session holds;
    one with ``at-commit`` fails at COMMIT itself (it may have been stored)."""

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        ids = {r.event_id for batch in batches for r in batch}
        if "locked" in ids:
            raise StoreContention("lock timeout on the row of key locked")
        if "bad" in ids:
            raise RuntimeError("a bug")
        if "at-commit" in ids:
            raise StoreUnavailable("disk I/O error at COMMIT", maybe_stored=True)
        return self._store.commit(batches)

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        return self._store.maintain(retention, max_events, reclaim=reclaim)


async def test_a_lock_on_one_requests_row_fails_that_request_alone(tmp_path: Path) -> None:
    monitor = WriterMonitor()
    commits: list[int] = []
    recorded: list[str] = []
    requests = {name: [rec("t", name)] for name in ("free", "locked", "bad")}  # one group of three
    writer = partial(
        run_writer,
        store=LockedRowStore(SQLiteStore(tmp_path / "db")),
        monitor=monitor,
        max_txn_events=100,
        on_commit=lambda: commits.append(1),
        incidents=Incidents(recorded.append),
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer)
            assert outcomes["free"] == Accepted(1, 1, 0)  # retried alone, it commits
            assert outcomes["locked"] == Unavailable("lock timeout on the row of key locked")
            bad = outcomes["bad"]  # retried alone, it meets its bug: a 500 for it alone
            assert isinstance(bad, Internal) and (bad.stage, bad.stored_nothing) == ("writer", True)
            assert (commits, recorded) == ([1], ["writer"])
            # The group, then the locked one and the bad one alone.
            assert monitor.statistics().failed_transactions == 3
            # Alone, a lock is not retried: one failed transaction.
            outcome = await write(send, [rec("t", "locked")])
            assert outcome == Unavailable("lock timeout on the row of key locked")
            assert monitor.statistics().failed_transactions == 4
            # A failure at COMMIT itself may have stored the events: the 503 says so.
            outcome = await write(send, [rec("t", "at-commit")])
            assert outcome == Unavailable("disk I/O error at COMMIT", stored_nothing=False)
            await send.aclose()
    stats = monitor.statistics()
    assert (stats.transactions, stats.failed_transactions) == (1, 5)


# The workers: where a body is decoded, the decode threads' limit, the cutoff, the topic budget.


def padded(events: list[dict[str, Any]], size: int) -> bytes:
    """A JSON body of exactly ``size`` bytes: the events, then spaces (JSON ignores them)."""
    body = json.dumps(events).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


async def test_a_large_or_compressed_body_is_decoded_off_the_loop_and_stored_alike(
    tmp_path: Path,
) -> None:
    """From ``THREAD_BODY_BYTES`` on, and compressed at any size, a body is decoded on a
    thread; its events are stored exactly as those of a small plain body."""
    decoded_on: list[int] = []

    def decode(body: bytes, headers: Any, limits: Limits) -> list[EventRecord]:
        decoded_on.append(threading.get_ident())
        return decode_publish(body, headers, limits)

    payload = {"text": "x" * 100, "n": 7}
    bodies = [
        ("small", padded([event(event_id="small", payload=payload)], THREAD_BODY_BYTES - 1), {}),
        ("large", padded([event(event_id="large", payload=payload)], THREAD_BODY_BYTES), {}),
        (
            "gzip",
            gzip.compress(json.dumps([event(event_id="gzip", payload=payload)]).encode()),
            {"content-encoding": "gzip"},
        ),
    ]
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](10)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](10)
    outcomes = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            store = SQLiteStore(tmp_path / "db")
            await nursery.start(
                partial(run_writer, max_txn_events=100), write_recv, store, WriterMonitor()
            )
            await nursery.start(run_worker, ingest_recv, write_send, LIMITS)
            for _, body, headers in bodies:
                reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
                await ingest_send.send(Submission(body, headers, decode, reply_send))
                outcomes.append(await reply_recv.receive())
            await ingest_send.aclose()
    assert outcomes == [Accepted(1, 1, 0)] * 3
    loop = threading.get_ident()
    assert [ident == loop for ident in decoded_on] == [True, False, False]
    stored = SQLiteReader(tmp_path / "db").events(None, 0, 10, 0)
    assert [e.event_id for e in stored] == ["small", "large", "gzip"]
    assert {
        (e.topic, e.timestamp, e.source, json.loads(e.payload))
        == ("t", "2026-11-21T10:00:00Z", "tests", payload)
        for e in stored
    } == {True}


@pytest.mark.parametrize("encoding", ["identity", " Identity ", ""])
async def test_an_identity_encoded_small_body_is_decoded_on_the_loop(encoding: str) -> None:
    """``Content-Encoding: identity`` (any case, any spaces) is no encoding: the body is as
    cheap as a plain one and stays on the event loop."""
    decoded_on: list[int] = []

    def decode(body: bytes, headers: Any, limits: Limits) -> list[EventRecord]:
        decoded_on.append(threading.get_ident())
        return [rec("t", body.decode())]

    ingest_send, ingest_recv = trio.open_memory_channel[Submission](10)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](10)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_worker, ingest_recv, write_send, LIMITS)
            reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
            headers = {"content-encoding": encoding}
            await ingest_send.send(Submission(b"small", headers, decode, reply_send))
            request = await write_recv.receive()
            request.reply.send_nowait(Accepted(1, 1, 0))
            assert await reply_recv.receive() == Accepted(1, 1, 0)
            await ingest_send.aclose()
    assert request.events == [rec("t", "small")]
    assert decoded_on == [threading.get_ident()]


class BlockingDecoder:
    """A decoder whose calls wait on their thread until the gate opens: ``released()`` opens it
    when the test's block ends, passed or failed, so that no decode thread is left waiting."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, body: bytes, headers: Any, limits: Limits) -> list[EventRecord]:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.entered.release()
        try:
            if threading.current_thread() is threading.main_thread():
                raise AssertionError("a large body was decoded on the event loop")
            assert self.gate.wait(30), "the test never opened the gate"
        finally:
            with self._lock:
                self.running -= 1
        return [rec("t", body[:8].decode())]

    async def wait_entered(self) -> None:
        await trio.to_thread.run_sync(self.entered.acquire, abandon_on_cancel=True)

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        try:
            yield
        finally:
            self.gate.set()


async def test_the_decode_threads_limit_bounds_the_decodes_running_at_once() -> None:
    """Two workers share a limit of one decode thread: while one large body is decoded, the
    other worker's waits for the thread, then is decoded and answered."""
    decode = BlockingDecoder()
    threads = trio.CapacityLimiter(1)
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](10)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](10)
    replies = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with ingest_recv, write_send:
                for _ in range(2):
                    worker = partial(run_worker, decode_threads=threads)
                    await nursery.start(worker, ingest_recv.clone(), write_send.clone(), LIMITS)
            with decode.released():
                for name in (b"first---", b"second--"):
                    reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
                    body = name + b" " * THREAD_BODY_BYTES
                    await ingest_send.send(Submission(body, {}, decode, reply_send))
                    replies.append(reply_recv)
                await decode.wait_entered()
                await trio.testing.wait_all_tasks_blocked()
                # One decode runs; the other worker waits for the limit's only thread.
                assert (threads.borrowed_tokens, threads.statistics().tasks_waiting) == (1, 1)
            for _ in range(2):
                request = await write_recv.receive()
                request.reply.send_nowait(Accepted(1, 1, 0))
            assert [await reply.receive() for reply in replies] == [Accepted(1, 1, 0)] * 2
            await ingest_send.aclose()
    assert decode.most == 1


async def test_a_request_decoded_after_the_cutoff_is_answered_503_and_not_stored(
    tmp_path: Path,
) -> None:
    """The shutdown grace ends while a large body is decoded: its client gets a 503 that says
    nothing was stored, and the writer never sees it; what was still queued is answered so
    without being decoded."""
    decode = BlockingDecoder()
    cutoff = trio.Event()
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](10)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](10)
    store = SQLiteStore(tmp_path / "db")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_writer, max_txn_events=100), write_recv, store, WriterMonitor()
            )
            await nursery.start(partial(run_worker, cutoff=cutoff), ingest_recv, write_send, LIMITS)
            replies = []
            with decode.released():
                for name in (b"decoding", b"queued--"):
                    reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
                    body = name + b" " * THREAD_BODY_BYTES
                    await ingest_send.send(Submission(body, {}, decode, reply_send))
                    replies.append(reply_recv)
                await decode.wait_entered()
                cutoff.set()
            outcomes = [await reply.receive() for reply in replies]
            await ingest_send.aclose()
    assert outcomes == [LATE, LATE]
    assert all(isinstance(o, Unavailable) and o.stored_nothing for o in outcomes)
    assert decode.most == 1 and not decode.entered.acquire(blocking=False)  # one decode only
    assert SQLiteReader(tmp_path / "db").counters()[:3] == (0, 0, 0)


async def test_the_topic_budget_admits_exactly_its_limit_and_refuses_one_more_whole() -> None:
    budget = TopicBudget(["a", "b"], limit=4)
    # Known topics, and two new ones however often they occur: exactly the limit.
    assert budget.admit([rec("a", "1"), rec("c", "2"), rec("c", "3"), rec("d", "4")]) is None
    assert budget.count == 4
    # At the limit, events of known topics are always admitted.
    assert budget.admit([rec("d", "5"), rec("b", "6")]) is None
    refused = budget.admit([rec("a", "7"), rec("e", "8"), rec("e", "9"), rec("f", "10")])
    assert refused is not None
    assert (refused.status, refused.error) == (422, "too_many_topics")
    # The client is told the count, the limit and the setting that raises it, what to do
    # instead, and that nothing was stored; each new topic is named once, at its first event.
    rule = (
        "a new topic would take the store over 4 topics, the limit (AGGREGATOR_MAX_TOPICS); "
        "publish to an existing topic"
    )
    assert refused.message == (
        f"4 topics are stored and this request adds 2: {rule}; nothing of the request was stored"
    )
    assert refused.details == [Detail(1, "topic", rule), Detail(3, "topic", rule)]
    assert budget.count == 4  # refused whole: nothing reserved


async def test_a_refused_request_reserves_none_of_its_new_topics() -> None:
    budget = TopicBudget(["a"], limit=3)
    refused = budget.admit([rec("x", "1"), rec("a", "2"), rec("y", "3"), rec("z", "4")])
    assert refused is not None
    assert [d.index for d in refused.details] == [0, 2, 3]
    assert budget.count == 1
    # The two that fit are still admitted, and the limit then holds.
    assert budget.admit([rec("x", "5"), rec("y", "6")]) is None
    assert budget.count == 3
    assert budget.admit([rec("z", "7")]) is not None


async def test_a_worker_refuses_a_request_over_the_topic_budget_without_writing() -> None:
    budget = TopicBudget(["a"], limit=2)
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](10)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](10)

    def decode(body: bytes, headers: Any, limits: Limits) -> list[EventRecord]:
        return [rec(topic, "1") for topic in body.decode().split()]

    async def ask(topics: str) -> PublishOutcome:
        reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
        await ingest_send.send(Submission(topics.encode(), {}, decode, reply_send))
        return await reply_recv.receive()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_worker, topics=budget), ingest_recv, write_send, LIMITS)
            refused = await ask("a b c")
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock):  # the writer never saw it
                write_recv.receive_nowait()
            async with trio.open_nursery() as asking:
                asking.start_soon(ask, "b a")
                request = await write_recv.receive()
                request.reply.send_nowait(Accepted(2, 2, 0))
            await ingest_send.aclose()
    assert isinstance(refused, Rejection) and refused.error == "too_many_topics"
    assert [d.index for d in refused.details] == [1, 2]
    assert [r.topic for r in request.events] == ["b", "a"]
    assert budget.count == 2


async def test_a_worker_given_no_topic_budget_admits_any_number_of_topics() -> None:
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](10)
    write_send, write_recv = trio.open_memory_channel[WriteRequest](10)
    events = [rec(f"topic-{i}", "1") for i in range(1000)]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_worker, ingest_recv, write_send, LIMITS)
            reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
            await ingest_send.send(Submission(b"", {}, lambda *_: events, reply_send))
            request = await write_recv.receive()
            request.reply.send_nowait(Accepted(1000, 1000, 0))
            assert await reply_recv.receive() == Accepted(1000, 1000, 0)
            await ingest_send.aclose()
    assert request.events == events


class DamagedStore(BrokenStore):
    """A store whose file turns out to be damaged at the first commit."""

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        raise StoreDamaged("file is not a database (SQLITE_NOTADB)", "/srv/data/db.sqlite3")


async def test_a_damaged_store_stops_the_writer_and_its_error_says_how_to_recover() -> None:
    """The writer's last error (what /health shows) is the damage's whole message: what is
    damaged, where, the command that recovers it and the section of the docs that explains."""
    monitor = WriterMonitor()
    stopped: list[int] = []
    send, recv = trio.open_memory_channel[WriteRequest](10)
    outcomes: list[WriteOutcome] = []
    with trio.fail_after(10), pytest.RaisesGroup(StoreDamaged, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, max_txn_events=10, on_broken=lambda: stopped.append(1))
            await nursery.start(writer, recv, DamagedStore(), monitor)
            outcomes.append(await write(send, [rec("t", "1")]))
            await send.aclose()
    error = monitor.statistics().last_error
    assert error is not None
    assert outcomes == [Unavailable(error, stored_nothing=False)]
    assert stopped == [1]
    assert error.startswith(
        "the store is damaged (file is not a database (SQLITE_NOTADB)) at /srv/data/db.sqlite3: "
    )
    assert "`sqlite3 /srv/data/db.sqlite3 .recover`" in error
    [section] = re.findall(r'\(docs/reliability\.md, "([^"]+)"\)$', error)
    docs = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    assert f"\n## {section}\n" in docs  # the pointer leads to a section that exists


async def test_a_lock_in_a_group_of_two_fails_only_its_request(tmp_path: Path) -> None:
    requests = {name: [rec("t", name)] for name in ("free", "locked")}  # one group of two
    store = LockedRowStore(SQLiteStore(tmp_path / "db"))
    writer = partial(run_writer, store=store, monitor=WriterMonitor(), max_txn_events=100)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer)
            await send.aclose()
    assert outcomes == {
        "free": Accepted(1, 1, 0),
        "locked": Unavailable("lock timeout on the row of key locked"),
    }


async def test_each_answer_says_per_event_whether_it_was_stored(tmp_path: Path) -> None:
    """The bulk door answers per item from these flags: one transaction's duplicates, within
    a request and across requests, are told apart from the events it stored."""
    requests = {  # one group of two, in this order
        "first": [rec("t", "a"), rec("t", "b"), rec("t", "a")],
        "second": [rec("t", "b"), rec("t", "c")],
    }
    store = SQLiteStore(tmp_path / "db")
    writer = partial(run_writer, store=store, monitor=WriterMonitor(), max_txn_events=100)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            send, outcomes = await write_as_one_group(nursery, requests, writer, in_order=True)
            await send.aclose()
    first, second = outcomes["first"], outcomes["second"]
    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    assert (first, list(first.stored_flags)) == (Accepted(3, 2, 1), [True, True, False])
    assert (second, list(second.stored_flags)) == (Accepted(2, 1, 1), [False, True])
