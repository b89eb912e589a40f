"""``/subscribe``, ``/topics`` and ``/metrics`` through the real HTTP front (in-process server)."""

from __future__ import annotations

import signal
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server, open_server
from tests.sse import open_stream
from tests.support import event, running_server


async def publish_batches(server: Server, topic: str, start: int, count: int, size: int) -> None:
    for i in range(start, start + count):
        response = await server.publish([event(topic, f"{i}-{j}") for j in range(size)])
        assert response.status_code == 200


def ids(messages: list[Any]) -> list[int]:
    return [m.id for m in messages]


@pytest.mark.trio
async def test_replay_then_live_over_http(server: Server) -> None:
    with trio.fail_after(30):
        await publish_batches(server, "a", 0, 3, 5)
        await publish_batches(server, "b", 0, 1, 5)
        async with open_stream(server.running.url, topic="a", after=2) as stream:
            replayed = await stream.events(13)
            await publish_batches(server, "a", 3, 2, 5)
            await publish_batches(server, "b", 1, 1, 5)
            live = await stream.events(10)
        stored = await server.all_events(topic="a")
    assert ids(replayed + live) == [e["seq"] for e in stored if e["seq"] > 2]
    assert [m.data for m in replayed + live] == [e for e in stored if e["seq"] > 2]


@pytest.mark.trio
async def test_a_stream_outlives_the_read_timeout_of_a_silent_client(tmp_path: Path) -> None:
    """An SSE client sends nothing after its request. Hypercorn's own read timeout cut every
    stream after AGGREGATOR_READ_TIMEOUT_SECONDS of that silence; it is not used any more."""
    settings = {"read_timeout_seconds": 0.2, "heartbeat_seconds": 0.05}
    with trio.fail_after(30):
        async with (
            open_server(tmp_path, **settings) as server,
            open_stream(server.running.url) as stream,
        ):
            began = time.monotonic()
            while time.monotonic() - began < 5 * 0.2:  # heartbeats: the server is alive
                assert "heartbeat" in (await stream.next()).comments
            await server.publish(event("a", "after-the-timeout"))
            (live,) = await stream.events(1)
    assert live.data["event_id"] == "after-the-timeout"


@pytest.mark.trio
async def test_resume_with_last_event_id_after_a_dropped_connection_sees_each_event_once(
    server: Server,
) -> None:
    seen: list[int] = []
    with trio.fail_after(30):
        await publish_batches(server, "t", 0, 4, 10)
        async with open_stream(server.running.url) as stream:
            seen += ids(await stream.events(25))
        # Dropped mid-way. Meanwhile more is committed; the client resumes from its last id
        # (the URL's after=0 is overridden by Last-Event-ID, as a reconnecting EventSource does).
        await publish_batches(server, "t", 4, 3, 10)
        headers = {"Last-Event-ID": str(seen[-1])}
        async with open_stream(server.running.url, headers=headers, after=0) as stream:
            seen += ids(await stream.events(45))
            await publish_batches(server, "t", 7, 1, 10)
            seen += ids(await stream.events(10))
        stored = await server.all_events()
    assert seen == [e["seq"] for e in stored]
    assert len(stored) == 80


@pytest.mark.trio
async def test_bad_cursors_are_422(server: Server) -> None:
    with trio.fail_after(10):
        bad_after = await server.client.get("/subscribe", params={"after": "-1"})
        bad_id = await server.client.get("/subscribe", headers={"Last-Event-ID": "x"})
    assert bad_after.status_code == 422 and bad_after.json()["details"][0]["field"] == "after"
    assert bad_id.status_code == 422 and "Last-Event-ID" in bad_id.json()["message"]


@pytest.mark.trio
async def test_a_hundred_concurrent_subscribers_receive_the_same_sequence(tmp_path: Path) -> None:
    async with open_server(tmp_path / "data") as server:
        received: list[list[Any]] = []
        with trio.fail_after(60):

            async def subscriber(task_status: trio.TaskStatus[None]) -> None:
                async with open_stream(server.running.url, after=0) as stream:
                    task_status.started()
                    received.append(await stream.events(200))

            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    await nursery.start(subscriber)
                assert server.running.hub.statistics().active == 100
                writer = server.running.writer.statistics()
                reads = server.running.hub.statistics().tail_reads
                async with trio.open_nursery() as publishers:
                    for topic in ("x", "y"):
                        publishers.start_soon(publish_batches, server, topic, 0, 10, 10)
            stored = await server.all_events()
    transactions = server.running.writer.statistics().transactions - writer.transactions
    tail_reads = server.running.hub.statistics().tail_reads - reads
    assert len(received) == 100
    assert all(ids(r) == [e["seq"] for e in stored] for r in received)
    assert all([m.data for m in r] == stored for r in received[:3])
    # The store is read once per commit (or less: wake-ups coalesce), not once per subscriber.
    assert 1 <= tail_reads <= transactions <= 20


async def publish_latencies(server: Server, start: int, count: int) -> list[float]:
    payload = {"text": "x" * 2000}  # large events fill the stalled socket quickly
    latencies = []
    for i in range(start, start + count):
        batch = [event("s", f"{i}-{j}", payload=payload) for j in range(20)]
        began = time.perf_counter()
        response = await server.publish(batch)
        latencies.append(time.perf_counter() - began)
        assert response.status_code == 200
    return latencies


async def metric_values(server: Server) -> dict[str, float]:
    response = await server.client.get("/metrics")
    assert response.status_code == 200
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{label}}}" if label else "")] = sample.value
    return values


@pytest.mark.trio
async def test_a_stalled_subscriber_does_not_delay_publishes_and_replays_when_it_reads_again(
    tmp_path: Path,
) -> None:
    async with open_server(tmp_path / "data", subscriber_buffer_events=100) as server:
        with trio.fail_after(120):
            without = await publish_latencies(server, 0, 30)
            async with open_stream(server.running.url, receive_buffer=4096) as stalled:
                assert server.running.hub.statistics().active == 1
                # ~2.6 MB of SSE for a client that reads nothing: it must fall behind.
                with_stall = await publish_latencies(server, 30, 60)
                values = await metric_values(server)
                assert values["aggregator_subscribers_lagged_total"] >= 1
                # It reads again: every event exactly once, in order (replay, then live).
                stored = await server.all_events(limit=1000)
                stored += await server.all_events(after=stored[-1]["seq"])
                seen: list[int] = []
                while len(seen) < len(stored):
                    seen += [m.id for m in await stalled.events(1)]
    assert seen == [e["seq"] for e in stored] and len(stored) == 90 * 20
    # Generous: a writer that waited for the stalled client would never finish (fail_after).
    assert statistics.median(with_stall) < 5 * statistics.median(without) + 0.05


@pytest.mark.trio
async def test_topics_are_the_per_topic_split_of_stats(server: Server) -> None:
    with trio.fail_after(30):
        for n, topic in enumerate(["a", "b", "c.d"]):
            batch = [event(topic, str(i)) for i in range(10 * (n + 1))]
            await server.publish(batch)
            await server.publish(batch[: 3 + n])  # duplicates
        topics_response = await server.client.get("/topics")
        stats = await server.stats()
        stored = await server.all_events()
    topics = topics_response.json()
    assert topics_response.status_code == 200
    assert [t["topic"] for t in topics] == stats["topics"] == ["a", "b", "c.d"]
    assert sum(t["received"] for t in topics) == stats["received"] == 60 + 12
    assert sum(t["unique_processed"] for t in topics) == stats["unique_processed"] == 60
    assert sum(t["duplicate_dropped"] for t in topics) == stats["duplicate_dropped"] == 12
    for t in topics:
        assert t["received"] == t["unique_processed"] + t["duplicate_dropped"]
        assert t["last_seq"] == max(e["seq"] for e in stored if e["topic"] == t["topic"])


@pytest.mark.trio
async def test_metrics_parse_and_their_counters_match_stats(server: Server) -> None:
    with trio.fail_after(30):
        await server.publish([event("a", str(i)) for i in range(7)])
        await server.publish([event("a", str(i)) for i in range(5)])
        await server.publish([event("a", "x", timestamp="yesterday")])  # 422
        await server.client.post("/publish", content=b"{", headers={"Content-Type": "text/csv"})
        async with open_stream(server.running.url) as stream:
            await stream.events(7)
            during = await metric_values(server)
        stats = await server.stats()
        values = await metric_values(server)
    writer = server.running.writer.statistics()
    assert values["aggregator_events_received_total"] == stats["received"] == 12
    assert values["aggregator_events_stored_total"] == stats["unique_processed"] == 7
    assert values["aggregator_events_duplicate_total"] == stats["duplicate_dropped"] == 5
    assert values["aggregator_publish_rejected_total{protocol=publish,reason=validation}"] == 1
    assert (
        values["aggregator_publish_rejected_total{protocol=publish,reason=unsupported_media_type}"]
        == 1
    )
    assert values["aggregator_transaction_events_count"] == writer.transactions == 2
    assert values["aggregator_transaction_events_sum"] == writer.events == 12
    assert values["aggregator_commit_duration_seconds_count"] == 2
    assert values["aggregator_http_request_duration_seconds_count{method=POST,route=/publish}"] == 4
    assert values["aggregator_ingest_queue_depth"] == 0
    assert values["aggregator_ingest_queue_capacity"] == server.config.queue_size
    assert values["aggregator_database_size_bytes"] > 0
    assert during["aggregator_subscribers_active"] == 1
    assert values["aggregator_subscribers_active"] == 0


@pytest.mark.trio
async def test_subscribers_beyond_the_limit_get_503(tmp_path: Path) -> None:
    async with open_server(tmp_path / "data", max_subscribers=1) as server:
        with trio.fail_after(30):
            async with open_stream(server.running.url):
                refused = await server.client.get("/subscribe")
            # The server sees the close as an http.disconnect, on its own schedule.
            while server.running.hub.statistics().active:
                await trio.testing.wait_all_tasks_blocked()
            async with open_stream(server.running.url):
                pass
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert "AGGREGATOR_MAX_SUBSCRIBERS" in refused.json()["message"]


@pytest.mark.trio
async def test_shutdown_ends_open_streams_at_once(tmp_path: Path) -> None:
    ended: list[list[Any]] = []

    async def subscriber(url: str, task_status: trio.TaskStatus[None]) -> None:
        async with open_stream(url) as stream:
            task_status.started()
            ended.append(await stream.rest())

    # A grace period far longer than the test may take: only ending the streams lets it pass.
    with trio.fail_after(30):
        async with (
            trio.open_nursery() as nursery,
            open_server(tmp_path / "data", shutdown_grace_seconds=600) as server,
        ):
            await server.publish(event())
            for _ in range(3):
                await nursery.start(subscriber, server.running.url)
        # Out of open_server: shutdown was set and serve finished, streams and all.
    assert len(ended) == 3
    for rest in ended:
        assert [m.id for m in rest if m.id] == [1]
        assert any("shutting down" in c for c in rest[-1].comments)


@pytest.mark.trio
async def test_sigterm_ends_streams_and_the_process_exits_0_well_within_the_grace(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path / "data", "--shutdown-grace-seconds", "120") as server:
        with trio.fail_after(60):
            async with open_stream(server.url) as stream:
                server.proc.send_signal(signal.SIGTERM)
                rest = await stream.rest()
            code = await trio.to_thread.run_sync(server.proc.wait, 30)
    assert code == 0
    assert any("shutting down" in c for c in rest[-1].comments)


@pytest.mark.trio
async def test_overload_is_shed_with_429_the_queue_stays_bounded_and_it_recovers(
    tmp_path: Path,
) -> None:
    async with open_server(tmp_path / "data", workers=2, queue_size=3) as server:
        # Another connection holds the write lock: the writer waits, as when disks are slow.
        blocker = sqlite3.connect(server.config.database_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        answers: dict[int, int] = {}

        async def publish(i: int) -> None:
            response = await server.publish([event("o", f"{i}-{j}") for j in range(10)])
            answers[i] = response.status_code
            if response.status_code == 429:
                assert response.headers["Retry-After"] == "1"

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                # 2 requests with the workers (one in the writer, one waiting), 3 queued...
                for i in range(5):
                    nursery.start_soon(publish, i)
                    await trio.testing.wait_all_tasks_blocked()
                # ...and everything beyond is shed at once, whatever is offered.
                for i in range(5, 25):
                    await publish(i)
                full = await metric_values(server)
                blocker.execute("ROLLBACK")
            # Recovery needs nothing but the lock going away: resend what was refused.
            for i in [i for i, status in answers.items() if status == 429]:
                await publish(i)
            stats = await server.stats()
            after = await metric_values(server)
    assert sorted(answers) == list(range(25)) and set(answers.values()) == {200}
    assert full["aggregator_ingest_queue_depth"] == 3 == full["aggregator_ingest_queue_capacity"]
    assert full["aggregator_publish_rejected_total{protocol=publish,reason=overloaded}"] == 20
    assert after["aggregator_ingest_queue_depth"] == 0
    assert stats["unique_processed"] == 250 and stats["received"] == 250  # nothing lost
