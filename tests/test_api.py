"""Reads, stats, health, concurrency and back-pressure through the real HTTP front."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from aggregator.actors.integrity import STATES as INTEGRITY_STATES
from tests.conftest import Server, open_server
from tests.support import event

pytestmark = pytest.mark.trio


def next_link(response: httpx.Response) -> str | None:
    match = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers.get("Link", ""))
    return match.group(1) if match else None


async def test_twenty_concurrent_publishes_of_one_event_store_one_row(server: Server) -> None:
    before = await server.stats()
    results: list[dict[str, int]] = []

    async def publish() -> None:
        response = await server.publish(event(event_id="same"))
        assert response.status_code == 200
        results.append(response.json())

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(publish)
        after = await server.stats()
        stored = await server.all_events()
    assert sum(r["stored"] for r in results) == 1
    assert sum(r["duplicates"] for r in results) == 19
    assert len(stored) == 1
    delta = [after[k] - before[k] for k in ("received", "unique_processed", "duplicate_dropped")]
    assert delta == [20, 1, 19]


@pytest.mark.parametrize(("total", "dup_ratio"), [(20_000, 0.30), (5_000, 0.20)])
async def test_exact_counts_with_duplicates(
    tmp_path: Path, backend: dict[str, Any], total: int, dup_ratio: float
) -> None:
    rng = random.Random(total)
    unique = round(total * (1 - dup_ratio))
    events = [event(f"topic{i % 7}", f"id-{i}") for i in range(unique)]
    events += [events[rng.randrange(unique)] for _ in range(total - unique)]
    rng.shuffle(events)
    async with open_server(tmp_path / "data", **backend) as server:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for start in range(0, total, 500):
                    nursery.start_soon(server.publish, events[start : start + 500])
            stats = await server.stats()
    assert stats["received"] == total
    assert stats["unique_processed"] == unique
    assert stats["duplicate_dropped"] == total - unique
    assert stats["topics"] == [f"topic{i}" for i in range(7)]
    rows = await trio.to_thread.run_sync(server.stored_rows)
    assert len(rows) == len(set(rows)) == unique


async def test_invariant_holds_at_every_read_under_concurrent_publishers(server: Server) -> None:
    reads: list[dict[str, Any]] = []

    async def publisher(n: int) -> None:
        for batch in range(15):
            await server.publish(
                [event(f"t{n % 3}", f"{(n * 7 + batch + i) % 400}") for i in range(40)]
            )

    async def reader(done: trio.Event) -> None:
        while not done.is_set():
            reads.append(await server.stats())

    with trio.fail_after(60):
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, done)
            async with trio.open_nursery() as publishers:
                for n in range(10):
                    publishers.start_soon(publisher, n)
            done.set()
        reads.append(await server.stats())
    assert len(reads) > 5
    for stats in reads:
        assert stats["received"] == stats["unique_processed"] + stats["duplicate_dropped"]
    assert reads[-1]["received"] == 10 * 15 * 40
    assert [r["received"] for r in reads] == sorted(r["received"] for r in reads)


async def test_paging_by_link_visits_every_event_once_in_seq_order(server: Server) -> None:
    with trio.fail_after(30):
        for start in range(0, 250, 50):
            await server.publish(
                [event("a" if i % 3 else "b", str(i)) for i in range(start, start + 50)]
            )
        for topic, expected in ((None, 250), ("a", 166), ("b", 84)):
            url: str | None = "/events?limit=7" + (f"&topic={topic}" if topic else "")
            seen: list[int] = []
            while url is not None:
                response = await server.client.get(url)
                assert response.status_code == 200
                page = response.json()
                assert len(page) <= 7
                seen += [e["seq"] for e in page]
                if topic:
                    assert all(e["topic"] == topic for e in page)
                url = next_link(response)
                if url is not None:
                    assert ("topic=" in url) == (topic is not None)
            assert len(seen) == expected
            assert seen == sorted(set(seen))


async def test_events_query_parameters(server: Server) -> None:
    with trio.fail_after(30):
        await server.publish([event("a", str(i)) for i in range(1000)])
        await server.publish([event("a", str(i)) for i in range(1000, 1100)])
        big = await server.client.get("/events", params={"limit": 5000})
        default = await server.client.get("/events")
        offset = await server.client.get("/events", params={"after": 10, "offset": 5, "limit": 2})
        unknown = await server.client.get("/events", params={"topic": "nope"})
        last = await server.client.get("/events", params={"after": 1095})
        bad = [
            await server.client.get("/events", params=p)
            for p in (
                {"limit": 0},
                {"limit": "ten"},
                {"after": -1},
                {"offset": "x"},
                {"after": 2**64},
            )
        ]
    assert len(big.json()) == 1000 and next_link(big) == "/events?after=1000&limit=1000"
    assert len(default.json()) == 100
    assert [e["seq"] for e in offset.json()] == [16, 17]
    assert unknown.status_code == 200 and unknown.json() == []
    assert [e["seq"] for e in last.json()] == list(range(1096, 1101))
    assert next_link(last) is None
    for response in bad:
        assert response.status_code == 422
        assert response.json()["error"] == "validation"


async def test_stats_and_health_shapes(server: Server) -> None:
    with trio.fail_after(10):
        await server.publish([event("b", "1"), event("a", "1"), event("a", "1")])
        stats = await server.stats()
        health = await server.client.get("/health")
    assert set(stats) >= {"received", "unique_processed", "duplicate_dropped", "topics", "uptime"}
    assert (stats["received"], stats["unique_processed"], stats["duplicate_dropped"]) == (3, 2, 1)
    assert stats["topics"] == ["a", "b"]
    assert isinstance(stats["uptime"], float) and stats["uptime"] >= 0
    assert health.status_code == 200 and health.json() == {"status": "ok"}


async def test_unknown_routes_and_methods_answer_json(server: Server) -> None:
    with trio.fail_after(10):
        missing = await server.client.get("/nope")
        wrong = await server.client.get("/publish")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert wrong.status_code == 405 and "GET /publish" in wrong.json()["message"]


async def test_full_pipeline_answers_429_then_recovers_and_commits_what_it_accepted(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with open_server(tmp_path / "data", workers=1, queue_size=1, **backend) as server:
        # Another connection holds the write lock: the writer waits for it.
        release = server.lock_out_writer()
        statuses: list[int] = []
        retry_after: list[str] = []

        async def publish(i: int) -> None:
            response = await server.publish(event(event_id=str(i)))
            statuses.append(response.status_code)
            if response.status_code == 429:
                retry_after.append(response.headers["Retry-After"])
                assert "AGGREGATOR_QUEUE_SIZE" in response.json()["message"]

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                # The one worker waits on the writer with #0; #1 fills the queue of one.
                for i in range(2):
                    nursery.start_soon(publish, i)
                    await trio.testing.wait_all_tasks_blocked()
                await publish(2)
                assert statuses == [429] and retry_after == ["1"]
                release()
            await publish(3)
            stats = await server.stats()
    assert sorted(statuses) == [200, 200, 200, 429]
    assert stats["unique_processed"] == 3  # every accepted request was committed


async def test_health_is_503_while_the_store_cannot_write_and_recovers(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with open_server(tmp_path / "data", **backend) as server:
        release = server.lock_out_writer()
        with trio.fail_after(30):
            failed = await server.publish(event(event_id="1"))  # waits out the lock timeout
            health = await server.client.get("/health")
            ready = await server.client.get("/readyz")
            live = await server.client.get("/livez")
            release()
            ok = await server.publish(event(event_id="1"))
            healthy = await server.client.get("/health")
            ready_again = await server.client.get("/readyz")
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "1"
    assert "lock" in failed.json()["message"]  # SQLite: "locked"; PostgreSQL: "lock timeout"
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable" and "lock" in health.json()["reason"]
    assert ok.json() == {"accepted": 1, "stored": 1, "duplicates": 0}
    assert healthy.status_code == 200
    # The Kubernetes probes: not ready while the store cannot write, alive all the time.
    # /readyz adds the background integrity check's state (PostgreSQL has none: "off").
    assert ready.status_code == 503 and ready.json()["integrity_check"] in INTEGRITY_STATES
    assert {k: v for k, v in ready.json().items() if k != "integrity_check"} == health.json()
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert ready_again.status_code == 200
