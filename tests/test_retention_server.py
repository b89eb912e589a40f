"""Retention through a real server (in-process): by age with a subscriber attached, across a
restart, and by size under concurrent publishing. The wall clock is injected; the writer's
upkeep steps are waited for (``WriterMonitor.wait_until``), never slept for."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from aggregator.store.sqlite_retention import used_bytes
from tests.conftest import Server, open_server
from tests.sse import open_stream
from tests.support import event
from tests.test_retention import FakeClock
from tests.test_subscribe import metric_values

pytestmark = [pytest.mark.trio, pytest.mark.sqlite_only]


async def publish(server: Server, prefix: str, count: int, **extra: Any) -> None:
    response = await server.publish([event("a", f"{prefix}-{i}", **extra) for i in range(count)])
    assert response.status_code == 200, response.text


async def every_event(server: Server) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while page := await server.all_events(after=events[-1]["seq"] if events else 0):
        events += page
    return events


async def expired_after_a_step(server: Server, expired: int) -> None:
    """Wait until the writer's upkeep has deleted ``expired`` events in all."""
    await server.running.writer.wait_until(lambda s: s.expired >= expired)


async def test_by_age_with_a_subscriber_attached(tmp_path: Path) -> None:
    clock = FakeClock()
    with trio.fail_after(30):
        async with open_server(tmp_path, clock=clock, retention_seconds=60) as server:
            async with open_stream(server.running.url, after=0) as live:
                await publish(server, "old", 5)
                clock.advance(70)  # the first five are past the retention now
                await publish(server, "new", 3)  # its commit's upkeep step deletes them
                await expired_after_a_step(server, 5)
                # The live subscriber saw every event once, in order, the expired ones too.
                assert [m.data["event_id"] for m in await live.events(8)] == [
                    *(f"old-{i}" for i in range(5)),
                    *(f"new-{i}" for i in range(3)),
                ]
            # A subscriber from the start now begins at the oldest stored event.
            async with open_stream(server.running.url, after=0) as late:
                assert [m.id for m in await late.events(3)] == [6, 7, 8]
            assert [e["seq"] for e in await server.all_events(after=2)] == [6, 7, 8]
            stats = await server.stats()
            assert (stats["received"], stats["unique_processed"], stats["topics"]) == (8, 8, ["a"])
            topics = (await server.client.get("/topics")).json()
            assert [(t["unique_processed"], t["stored_now"], t["expired"]) for t in topics] == [
                (8, 3, 5)
            ]
            metrics = await metric_values(server)
            assert metrics["aggregator_events_expired_total"] == 5
            assert metrics["aggregator_events_stored_now"] == 3


async def test_expired_keys_stay_forgotten_and_seqs_go_on_across_a_restart(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    with trio.fail_after(30):
        async with open_server(tmp_path, clock=clock, retention_seconds=60) as server:
            await publish(server, "k", 4)
            clock.advance(61)
            await publish(server, "later", 1)
            await expired_after_a_step(server, 4)
        async with open_server(tmp_path, clock=clock, retention_seconds=60) as server:
            assert (await server.stats())["unique_processed"] == 5
            again = await server.publish([event("a", "k-0"), event("a", "later-0")])
            assert again.json() == {"accepted": 2, "stored": 1, "duplicates": 1}
            assert [(e["seq"], e["event_id"]) for e in await server.all_events()] == [
                (5, "later-0"),
                (6, "k-0"),  # stored again, under a seq never given before
            ]
            metrics = await metric_values(server)
            assert metrics["aggregator_events_expired_total"] == 4


async def test_by_size_under_concurrent_publishing(tmp_path: Path) -> None:
    limit = 600_000
    payload = {"text": "x" * 400}
    with trio.fail_after(60):
        async with open_server(tmp_path, retention_bytes=limit) as server:

            async def publisher(p: int) -> None:
                for b in range(15):
                    await publish(server, f"{p}-{b}", 40, payload=payload)

            async with trio.open_nursery() as nursery:
                for p in range(4):
                    nursery.start_soon(publisher, p)
            # Publishing is over: wait for the step that finds nothing left to do.
            await server.running.writer.wait_until(lambda s: s.expired > 0 and not s.upkeep_more)
            stats = await server.stats()
            stored = await every_event(server)
            conn = sqlite3.connect(server.config.database_path)
            try:
                in_use, file_size = used_bytes(conn), server.config.database_path.stat().st_size
            finally:
                conn.close()
            expired = server.running.writer.statistics().expired
    # 2,400 events of ~0.5 KB, ~1.3 MB in all: about half had to go, the oldest first.
    assert stats["unique_processed"] == 2400 and 0 < len(stored) < 2400
    assert expired == 2400 - len(stored)
    seqs = [e["seq"] for e in stored]
    assert seqs == list(range(2401 - len(stored), 2401))
    # Under the limit once the steps are done; the file never grew past it by more than a few
    # transactions (one holds at most the 4 publishers' requests, ~100 KB).
    assert in_use <= limit
    assert file_size <= limit + 2 * 4 * 40 * 600
