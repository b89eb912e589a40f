"""The dashboard against a real aggregator subprocess."""

from __future__ import annotations

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


def test_dashboard_shows_what_a_real_server_stored(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        first = [event("orders", f"o{i}") for i in range(3)] + [event("auth", "a1")]
        assert publish(server.url, [*first, event("orders", "o0")]) == {
            "accepted": 5,
            "stored": 4,
            "duplicates": 1,
        }

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
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
                    assert screen.query_one(TopicsPanel).shown == ["auth", "orders"]
                    tail = screen.query_one(EventTail)
                    assert tail.seqs == [1, 2, 3, 4]

                    publish(server.url, [event("auth", "a2"), event("auth", "a1")])
                    await app.refresh_now()
                    await pilot.pause()
                    assert tail.seqs == [1, 2, 3, 4, 5]
                    assert "received 7" in screen.query_one(Counters).text

        run(scenario())
