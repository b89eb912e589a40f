"""An in-memory aggregator behind ``httpx.MockTransport``, and the asyncio runner for the TUI
tests (they are plain sync tests that run their scenario with ``asyncio.run``, so pytest-trio
never sees them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def run(scenario: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(scenario)


@dataclass
class FakeAggregator:
    """State a test sets; the handler answers from it like the contract says."""

    received: int = 0
    duplicates: int = 0
    uptime: float = 10.0
    events: list[dict[str, Any]] = field(default_factory=list)
    has_topics: bool = True  # False: GET /topics is 404, as on a server before issue 6
    down: bool = False  # every request fails to connect
    error_status: int | None = None  # every request answers this status
    unhealthy: str | None = None  # /health is 503 with this reason
    failing: set[str] = field(default_factory=set)  # these paths answer 500
    requests: list[str] = field(default_factory=list)

    def publish(
        self,
        topic: str,
        count: int,
        duplicates: int = 0,
        *,
        source: str = "fake",
        payload: Callable[[int], dict[str, Any]] = lambda seq: {"n": seq},
        event_id: Callable[[str, int], str] = lambda topic, seq: f"{topic}-{seq}",
    ) -> None:
        """Store ``count`` new events on ``topic`` and count ``duplicates`` dropped copies."""
        for _ in range(count):
            seq = len(self.events) + 1
            minutes, seconds = divmod(seq // 4, 60)
            received_at = f"2026-11-21T10:{minutes % 60:02d}:{seconds:02d}.{seq % 4}50000Z"
            self.events.append(
                {
                    "topic": topic,
                    "event_id": event_id(topic, seq),
                    "timestamp": "2026-11-21T10:00:00Z",
                    "source": source,
                    "payload": payload(seq),
                    "seq": seq,
                    "received_at": received_at,
                }
            )
        self.received += count + duplicates
        self.duplicates += duplicates
        self._topic_duplicates[topic] = self._topic_duplicates.get(topic, 0) + duplicates

    def __post_init__(self) -> None:
        self._topic_duplicates: dict[str, int] = {}

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.MockTransport(self.handle), base_url="http://fake:8080"
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.url.path in self.failing:
            return httpx.Response(500, json={"error": "internal", "message": "boom"})
        if self.error_status is not None:
            body = {"error": "unavailable", "message": "the store does not answer"}
            return httpx.Response(self.error_status, json=body)
        route = {
            "/health": self._health,
            "/stats": self._stats,
            "/topics": self._topics,
            "/events": self._events,
        }.get(request.url.path)
        if route is None:
            return httpx.Response(404, json={"error": "not_found", "message": "no such route"})
        return route(request)

    def _health(self, request: httpx.Request) -> httpx.Response:
        if self.unhealthy:
            return httpx.Response(503, json={"status": "unavailable", "reason": self.unhealthy})
        return httpx.Response(200, json={"status": "ok"})

    def _stats(self, request: httpx.Request) -> httpx.Response:
        body = {
            "received": self.received,
            "unique_processed": len(self.events),
            "duplicate_dropped": self.duplicates,
            "topics": sorted({e["topic"] for e in self.events}),
            "uptime": self.uptime,
        }
        return httpx.Response(200, json=body)

    def _topics(self, request: httpx.Request) -> httpx.Response:
        if not self.has_topics:
            return self._not_found()
        rows = []
        for topic in sorted({e["topic"] for e in self.events}):
            mine = [e["seq"] for e in self.events if e["topic"] == topic]
            rows.append(
                {
                    "topic": topic,
                    "unique": len(mine),
                    "duplicates": self._topic_duplicates.get(topic, 0),
                    "last_seq": max(mine),
                }
            )
        return httpx.Response(200, json=rows)

    def _events(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        topic = params.get("topic")
        after = int(params.get("after", "0"))
        offset = int(params.get("offset", "0"))
        limit = min(int(params.get("limit", "100")), 1000)
        rows = [e for e in self.events if (topic is None or e["topic"] == topic)]
        rows = [e for e in rows if e["seq"] > after][offset:]
        headers = {}
        if len(rows) > limit:
            headers["Link"] = f'</events?after={rows[limit - 1]["seq"]}&limit={limit}>; rel="next"'
        return httpx.Response(200, json=rows[:limit], headers=headers)

    @staticmethod
    def _not_found() -> httpx.Response:
        return httpx.Response(404, json={"error": "not_found", "message": "GET /topics"})
