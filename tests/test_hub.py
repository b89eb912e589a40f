"""The hub, the tail actor and one subscriber's stream, driven through their own interfaces.

The interleavings that matter (a commit between subscribing and replaying, between replay pages,
after the last replay page, while the subscriber is stalled) are forced exactly with hooks, not
hoped for with timing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from aggregator.actors import hub as hub_module
from aggregator.actors.hub import Hub, HubClosed, run_tail
from aggregator.actors.readers import ReaderPool, open_reader_pool
from aggregator.actors.replay import ReplayCache
from aggregator.actors.sse import HEARTBEAT, SHUTTING_DOWN, encode
from aggregator.config import Config
from aggregator.front import stream as stream_module
from aggregator.front.stream import stream_events
from aggregator.messages import EventRecord, StoredEvent
from aggregator.store import WriteStore, open_reader, open_store
from tests.sse import Message, SSEParser

FOREVER = 1e9  # no heartbeat during these tests


class Parts:
    def __init__(self, config: Config, store: WriteStore, hub: Hub, readers: ReaderPool) -> None:
        self.store, self.hub, self.readers = store, hub, readers
        self.check = open_reader(config)  # the test's own view of the store, outside the pool
        self.seqs: dict[str, list[int]] = {}
        self.counter = 0

    async def commit(self, *topics: str) -> int:
        """One transaction with one new event per topic, as the writer would do it; the last
        seq, once the tail has fanned it out."""
        records = []
        for topic in topics:
            self.counter += 1
            records.append(
                EventRecord(topic, f"e{self.counter}", "2026-01-01T00:00:00Z", "s", "{}")
            )
        before = self.check.head()
        self.store.commit([records])
        rows = self.check.events(None, before, len(records), 0)
        assert [row.event_id for row in rows] == [r.event_id for r in records]
        for row in rows:
            self.seqs.setdefault(row.topic, []).append(row.seq)
        self.hub.notify()
        last = rows[-1].seq
        await self.hub.wait_fanned_out(last)
        return last

    def expected(self, topic: str | None) -> list[int]:
        if topic is None:
            return sorted(seq for seqs in self.seqs.values() for seq in seqs)
        return self.seqs.get(topic, [])


@asynccontextmanager
async def open_parts(
    tmp_path: Path, buffer_events: int = 1000, replay: ReplayCache | None = None
) -> AsyncIterator[Parts]:
    config = Config(data_dir=tmp_path)
    store = open_store(config)
    try:
        async with open_reader_pool(partial(open_reader, config), 2) as readers:
            hub = Hub(buffer_events=buffer_events, replay=replay)
            async with trio.open_nursery() as nursery:
                await nursery.start(run_tail, hub, readers)
                parts = Parts(config, store, hub, readers)
                yield parts
                parts.check.close()
                hub.close()
    finally:
        store.close()


class HookedPool:
    """A reader pool that calls ``hook(phase, result)`` around every read of the stream."""

    def __init__(self, pool: ReaderPool, hook: Callable[[str, Any], Any]) -> None:
        self._pool = pool
        self._hook = hook

    async def run(self, call: Callable[[Any], Any]) -> Any:
        await self._hook("before", None)
        result = await self._pool.run(call)
        await self._hook("after", result)
        return result


async def read_ids(chunks: AsyncIterator[bytes], parser: SSEParser, until: int) -> list[int]:
    """Event ids from the stream until ``until`` is seen."""
    ids: list[int] = []
    while not ids or ids[-1] < until:  # at least one chunk with events
        for message in parser.feed((await anext(chunks)).decode()):
            if message.id is not None:
                ids.append(message.id)
    return ids


@pytest.mark.parametrize("topic", [None, "a"])
@pytest.mark.trio
async def test_commits_during_the_switch_from_replay_to_live_leave_no_gap_and_no_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topic: str | None
) -> None:
    monkeypatch.setattr(stream_module, "REPLAY_PAGE", 3)
    with trio.fail_after(20):
        async with open_parts(tmp_path) as parts:
            for _ in range(5):
                await parts.commit("a", "b")
            phases: list[str] = []

            async def hook(phase: str, result: Any) -> None:
                # Before each of the first reads: commits the stream sees in replay AND in its
                # buffer. After the short page that ends replay: commits only the buffer has.
                if phase == "before" and phases.count("before") < 3:
                    phases.append("before")
                    await parts.commit("a", "b", "a")
                elif phase == "after" and len(result) < 3 and "short" not in phases:
                    phases.append("short")
                    await parts.commit("b", "a")

            pool = HookedPool(parts.readers, hook)
            body = stream_events(parts.hub, pool, topic, 0, heartbeat_seconds=FOREVER)  # type: ignore[arg-type]
            async with aclosing(body) as chunks:
                parser = SSEParser()
                first: list[int] = []
                while "short" not in phases or first[-1] < parts.expected(topic)[-1]:
                    first += await read_ids(chunks, parser, 0)
                assert phases == ["before", "before", "before", "short"]
                last = await parts.commit("a", "b")  # now live
                rest = await read_ids(chunks, parser, last if topic is None else last - 1)
    ids = first + rest
    assert ids == parts.expected(topic)
    assert len(ids) == len(set(ids))


@pytest.mark.trio
async def test_a_stalled_subscriber_lags_then_replays_every_event_exactly_once(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with open_parts(tmp_path, buffer_events=3) as parts:
            body = stream_events(parts.hub, parts.readers, None, 0, heartbeat_seconds=FOREVER)
            # The pump is the socket: while the test does not receive, the stream is stalled.
            send, receive = trio.open_memory_channel[bytes](0)

            async def pump() -> None:
                async with aclosing(body) as chunks, send:
                    async for chunk in chunks:
                        await send.send(chunk)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump)
                parser = SSEParser()
                assert parser.feed((await receive.receive()).decode())[0].comments
                first = await parts.commit("a")
                seen = [m.id for m in parser.feed((await receive.receive()).decode())]
                assert seen == [first]
                # Stalled: the stream holds one chunk it cannot send; its buffer of 3 overflows.
                for _ in range(8):
                    await parts.commit("a")
                stats = parts.hub.statistics()
                assert stats.lagged == 1 and stats.active == 0  # dropped from the fan-out
                last = await parts.commit("a")  # the writer never waited for it
                while seen[-1] != last:
                    seen += [m.id for m in parser.feed((await receive.receive()).decode()) if m.id]
                assert parts.hub.statistics().active == 1  # live again after the replay
                nursery.cancel_scope.cancel()
    assert seen == parts.expected(None)


async def replay_all(parts: Parts, after: int, until: int) -> list[int]:
    """A stream of all topics from ``after``, read until ``until``: its event ids."""
    body = stream_events(parts.hub, parts.readers, None, after, heartbeat_seconds=FOREVER)
    async with aclosing(body) as chunks:
        return await read_ids(chunks, SSEParser(), until)


@pytest.mark.trio
async def test_streams_that_replay_together_read_each_block_once(tmp_path: Path) -> None:
    replay = ReplayCache(block=100)
    results: list[list[int]] = []
    with trio.fail_after(20):
        async with open_parts(tmp_path, replay=replay) as parts:
            last = await parts.commit(*["a", "b"] * 250)  # 500 events: 5 complete blocks

            async def one() -> None:
                results.append(await replay_all(parts, 0, last))

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(one)
            reads_before_a_late_one = replay.reads
            late = await replay_all(parts, 150, last)  # from inside a block
    assert last == 500 and len(results) == 20
    assert all(ids == list(range(1, 501)) for ids in results)
    assert late == list(range(151, 501))
    # 20 streams of 5 blocks: each block read from the store once, the rest from memory.
    assert (reads_before_a_late_one, replay.hits) == (5, 20 * 5 - 5 + 4)
    assert replay.reads == 5


@pytest.mark.trio
async def test_only_blocks_below_the_tail_cursor_are_shared(tmp_path: Path) -> None:
    replay = ReplayCache(block=100)
    with trio.fail_after(20):
        async with open_parts(tmp_path, replay=replay) as parts:
            last = await parts.commit(*["a"] * 250)  # blocks 1–100 and 101–200; 201–250 open
            first = await replay_all(parts, 0, last)
            again = await replay_all(parts, 0, last)
            topic = await read_topic(parts, "a", last)
    assert first == again == topic == list(range(1, 251))
    assert (replay.reads, replay.hits) == (2, 2)  # the open block is read by each stream


async def read_topic(parts: Parts, topic: str, until: int) -> list[int]:
    body = stream_events(parts.hub, parts.readers, topic, 0, heartbeat_seconds=FOREVER)
    async with aclosing(body) as chunks:
        return await read_ids(chunks, SSEParser(), until)


@pytest.mark.trio
async def test_one_store_read_per_commit_whatever_the_number_of_subscribers(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with open_parts(tmp_path) as parts:
            subscriptions = [parts.hub.subscribe(None) for _ in range(50)]
            subscriptions += [parts.hub.subscribe("b") for _ in range(50)]
            reads = parts.hub.statistics().tail_reads
            for _ in range(5):
                await parts.commit("a", "b")
            assert parts.hub.statistics().tail_reads - reads == 5
            everything = [await s.receive() for s in subscriptions[:50]]
            only_b = [await s.receive() for s in subscriptions[50:]]
    assert all([f.seq for f in frames] == parts.expected(None) for frames in everything)
    assert all([f.seq for f in frames] == parts.expected("b") for frames in only_b)
    # Encoded once, shared by every subscriber.
    assert all(a is b for frames in everything for a, b in zip(frames, everything[0], strict=True))


@pytest.mark.trio
async def test_closing_the_hub_ends_live_streams_with_a_last_comment(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with open_parts(tmp_path) as parts:
            await parts.commit("a")
            body = stream_events(parts.hub, parts.readers, None, 0, heartbeat_seconds=FOREVER)
            async with aclosing(body) as chunks:
                await anext(chunks)  # opening
                assert b"id: 1\n" in await anext(chunks)  # replay
                waiting = trio.Event()
                rest: list[bytes] = []

                async def drain() -> None:
                    waiting.set()
                    rest.extend([chunk async for chunk in chunks])

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(drain)
                    await waiting.wait()
                    await trio.testing.wait_all_tasks_blocked()
                    parts.hub.close()
            with pytest.raises(HubClosed):
                parts.hub.subscribe(None)
    assert rest == [SHUTTING_DOWN]


@pytest.mark.trio
async def test_an_idle_stream_sends_heartbeats_and_stays_live(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with open_parts(tmp_path) as parts:
            body = stream_events(parts.hub, parts.readers, None, 0, heartbeat_seconds=0.01)
            async with aclosing(body) as chunks:
                await anext(chunks)  # opening
                assert await anext(chunks) == HEARTBEAT  # nothing else can come
                assert await anext(chunks) == HEARTBEAT
                seq = await parts.commit("a")
                chunk = await anext(chunks)
                while chunk == HEARTBEAT:
                    chunk = await anext(chunks)
                assert chunk.startswith(f"id: {seq}\n".encode())


def test_a_frame_is_one_sse_message_even_when_the_payload_has_line_breaks() -> None:
    payload = '{\r\n  "text": "line1\\nline2",\n  "n": 1\r}'
    row = StoredEvent(7, "t", "e", "2026-01-01T00:00:00Z", "s", payload, "2026-01-01T00:00:01Z")
    frame = encode(row)
    assert frame.data.count(b"\n\n") == 1 and frame.data.endswith(b"\n\n")
    assert frame.data.count(b"\r") == 0
    [message] = SSEParser().feed(frame.data.decode())
    assert message == Message(7, {**row._asdict(), "payload": json.loads(payload)})


class CountingTailPool:
    """The tail's reader pool: counts event reads and runs ``before_head`` (once) just before
    the tail's next read of the head, to force what happens while that read is in flight."""

    def __init__(self, pool: ReaderPool) -> None:
        self._pool = pool
        self.event_reads = 0
        self.before_head: Callable[[], Any] | None = None

    async def run(self, call: Callable[[Any], Any]) -> Any:
        if call is hub_module._head and self.before_head is not None:
            hook, self.before_head = self.before_head, None
            await hook()
        elif call is not hub_module._head:
            self.event_reads += 1
        return await self._pool.run(call)


@asynccontextmanager
async def open_counted(tmp_path: Path) -> AsyncIterator[tuple[Parts, CountingTailPool]]:
    config = Config(data_dir=tmp_path)
    store = open_store(config)
    try:
        async with open_reader_pool(partial(open_reader, config), 2) as readers:
            hub = Hub(buffer_events=1000)
            counted = CountingTailPool(readers)
            async with trio.open_nursery() as nursery:
                await nursery.start(run_tail, hub, counted)
                parts = Parts(config, store, hub, readers)
                yield parts, counted
                parts.check.close()
                hub.close()
    finally:
        store.close()


@pytest.mark.trio
async def test_without_subscribers_the_tail_reads_no_events(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with open_counted(tmp_path) as (parts, pool):
            for _ in range(5):
                last = await parts.commit("a", "b")  # waits until the tail's cursor is there
            unwatched_reads = pool.event_reads
            body = stream_events(parts.hub, parts.readers, None, last, heartbeat_seconds=FOREVER)
            async with aclosing(body) as chunks:
                await anext(chunks)  # subscribed
                newest = await parts.commit("a")
                ids = await read_ids(chunks, SSEParser(), newest)
    assert unwatched_reads == 0
    assert pool.event_reads >= 1
    assert ids == [newest]


@pytest.mark.trio
async def test_a_subscriber_that_arrives_while_the_tail_skips_ahead_misses_nothing(
    tmp_path: Path,
) -> None:
    """The tail reads the head with nobody subscribed; meanwhile a subscriber registers, finds
    nothing new in replay, goes live, and an event is committed. The tail must not skip it."""
    received: list[int] = []
    with trio.fail_after(20):
        async with open_counted(tmp_path) as (parts, pool), trio.open_nursery() as nursery:
            first = await parts.commit("a")
            late: list[int] = []

            async def subscriber() -> None:
                body = stream_events(
                    parts.hub, parts.readers, None, first + 1, heartbeat_seconds=FOREVER
                )
                async with aclosing(body) as chunks:
                    parser = SSEParser()
                    async for chunk in chunks:
                        received.extend(m.id for m in parser.feed(chunk.decode()) if m.id)

            async def while_the_head_is_read() -> None:
                nursery.start_soon(subscriber)
                await trio.testing.wait_all_tasks_blocked()  # it replayed and waits live
                parts.store.commit([[EventRecord("a", "late", "2026-01-01T00:00:00Z", "s", "{}")]])
                late.append(parts.check.head())
                parts.hub.notify()

            pool.before_head = while_the_head_is_read
            second = await parts.commit("a")  # wakes the tail: nobody subscribed yet
            await parts.hub.wait_fanned_out(late[0])
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert second == first + 1 and late == [first + 2]
    assert received == [first + 2]
