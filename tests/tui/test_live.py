"""The dashboard against a real aggregator subprocess."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.support import event, running_server
from tests.tui.fake import run
from tui.app.app import DashboardApp
from tui.widgets.counters import Counters
from tui.widgets.status import ConnectionStatus
from tui.widgets.tail import EventTail
from tui.widgets.topics import TopicsPanel


def publish(url: str, events: list[dict[str, object]]) -> dict[str, int]:
    response = httpx.post(f"{url}/publish", json=events, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, int] = response.json()
    return body


async def subscribers(http: httpx.AsyncClient) -> float:
    """The server's own count of open ``/subscribe`` streams."""
    metrics = (await http.get("/metrics")).text
    for line in metrics.splitlines():
        if line.startswith("aggregator_subscribers_active "):
            return float(line.split()[1])
    raise AssertionError("no aggregator_subscribers_active in /metrics")


def test_dashboard_shows_what_a_real_server_stored(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        first = [event("orders", f"o{i}") for i in range(3)] + [event("auth", "a1")]
        assert publish(server.url, [*first, event("orders", "o0")]) == {
            "accepted": 5,
            "stored": 4,
            "duplicates": 1,
        }

        async def scenario() -> None:
            paths: list[str] = []

            async def record(request: httpx.Request) -> None:
                paths.append(request.url.path)

            hooks = {"request": [record]}
            async with httpx.AsyncClient(
                base_url=server.url, timeout=10, event_hooks=hooks
            ) as http:
                app = DashboardApp(http=http, interval=3600.0)
                async with app.run_test(size=(120, 36)) as pilot:
                    await app.workers.wait_for_complete()
                    await pilot.pause()
                    screen = app.dashboard
                    assert "connected" in screen.query_one(ConnectionStatus).text
                    assert screen.query_one(Counters).text.splitlines()[:3] == [
                        "received 5",
                        "unique 4",
                        "duplicates 1",
                    ]
                    topics = screen.query_one(TopicsPanel)
                    assert topics.cells == [("auth", "1", "0", "4"), ("orders", "3", "1", "3")]
                    tail = screen.query_one(EventTail)
                    assert tail.seqs == [1, 2, 3, 4]
                    # The tail streams GET /subscribe, opened after the first page.
                    assert app.tail.live and not app.tail.fallback
                    assert await subscribers(http) == 1
                    mark = len(paths)

                    publish(server.url, [event("auth", "a2"), event("auth", "a1")])
                    async with asyncio.timeout(10):
                        await app.tail.wait_past(5)  # arrived on the stream, not by polling
                    await app.refresh_now()
                    await pilot.pause()
                    assert tail.seqs == [1, 2, 3, 4, 5]
                    assert "received 7" in screen.query_one(Counters).text
                    assert topics.cells == [("auth", "2", "1", "5"), ("orders", "3", "1", "3")]
                    assert "/events" not in paths[mark:] and "/subscribe" not in paths[mark:]

        run(scenario())
