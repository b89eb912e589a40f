"""An in-memory aggregator behind ``httpx.MockTransport``, and the asyncio runner for the TUI
tests (they are plain sync tests that run their scenario with ``asyncio.run``, so pytest-trio
never sees them).

Its answers are the server's own response types (``Stats``, ``TopicOut``, ``ErrorBody`` of
``aggregator/front/responses.py`` and ``EventOut`` of ``aggregator/actors/sse.py``) encoded with
msgspec, as the server encodes them: a key renamed on the server is renamed here too, and a
dashboard that reads another name fails its tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import msgspec

from aggregator.actors.sse import EventOut
from aggregator.front.responses import ErrorBody, Stats, TopicOut

T = TypeVar("T")


def run(scenario: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(scenario)


def encoded(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    """A JSON response the way the server makes one: msgspec-encoded."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    return httpx.Response(status, content=msgspec.json.encode(body), headers=headers)


@dataclass
class FakeAggregator:
    """State a test sets; the handler answers from it like the contract says."""

    uptime: float = 10.0
    events: list[EventOut] = field(default_factory=list)
    has_topics: bool = True  # False: GET /topics is 404, as on a server before issue 6
    down: bool = False  # every request fails to connect
    error_status: int | None = None  # every request answers this status
    unhealthy: str | None = None  # /health is 503 with this reason
    failing: set[str] = field(default_factory=set)  # these paths answer 500
    requests: list[str] = field(default_factory=list)
    searches: list[dict[str, str]] = field(default_factory=list)  # the params of GET /events
    # Per topic, in the order topics first appeared: duplicates dropped.
    topic_duplicates: dict[str, int] = field(default_factory=dict)

    @property
    def received(self) -> int:
        return len(self.events) + self.duplicates

    @property
    def duplicates(self) -> int:
        return sum(self.topic_duplicates.values())

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
                EventOut(
                    topic=topic,
                    event_id=event_id(topic, seq),
                    timestamp="2026-11-21T10:00:00Z",
                    source=source,
                    payload=msgspec.Raw(msgspec.json.encode(payload(seq))),
                    seq=seq,
                    received_at=received_at,
                )
            )
        self.topic_duplicates[topic] = self.topic_duplicates.get(topic, 0) + duplicates

    def count(self, topic: str | None) -> int:
        """Stored events of ``topic`` (``None``: all)."""
        return sum(1 for e in self.events if topic in (None, e.topic))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.MockTransport(self.handle), base_url="http://fake:8080"
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.url.path in self.failing:
            return encoded(ErrorBody("internal", "boom"), 500)
        if self.error_status is not None:
            return encoded(ErrorBody("unavailable", "the store does not answer"), self.error_status)
        route = {
            "/health": self._health,
            "/stats": self._stats,
            "/topics": self._topics,
            "/events": self._events,
        }.get(request.url.path)
        if route is None:
            return self._not_found(request)
        return route(request)

    def _health(self, request: httpx.Request) -> httpx.Response:
        if self.unhealthy:
            return encoded({"status": "unavailable", "reason": self.unhealthy}, 503)
        return encoded({"status": "ok"})

    def _stats(self, request: httpx.Request) -> httpx.Response:
        topics = sorted({e.topic for e in self.events})
        return encoded(Stats(self.received, len(self.events), self.duplicates, topics, self.uptime))

    def _topics(self, request: httpx.Request) -> httpx.Response:
        """One ``TopicOut`` per topic with stored events, in the order the topics first
        appeared (the real server sorts them by name; the dashboard must not rely on it)."""
        if not self.has_topics:
            return self._not_found(request)
        rows = []
        for topic, duplicates in self.topic_duplicates.items():
            seqs = [e.seq for e in self.events if e.topic == topic]
            if seqs:
                stored = len(seqs)  # no retention here: stored now = ever stored
                rows.append(
                    TopicOut(topic, stored + duplicates, stored, duplicates, max(seqs), stored, 0)
                )
        return encoded(rows)

    def _events(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        self.searches.append(dict(params))
        topic = params.get("topic")
        if params.get("order") == "desc" or "q" in params or "source" in params:
            return self._search(params)
        after = int(params.get("after", "0"))
        offset = int(params.get("offset", "0"))
        limit = min(int(params.get("limit", "100")), 1000)
        rows = [e for e in self.events if topic in (None, e.topic) and e.seq > after][offset:]
        headers = {}
        if len(rows) > limit:
            headers["Link"] = f'</events?after={rows[limit - 1].seq}&limit={limit}>; rel="next"'
        return encoded(rows[:limit], headers=headers)

    def _search(self, params: httpx.QueryParams) -> httpx.Response:
        """Newest first with the search filters, roughly as the server has them: every word of
        ``q`` in the event_id or payload (no phrase or prefix here); a ``"`` left open is the
        server's 422."""
        q = params.get("q", "")
        if q.count('"') % 2:
            rule = 'q has an unclosed " (a phrase is "between double quotes")'
            return encoded(ErrorBody("validation", rule), 422)
        words = [w.strip('"*').lower() for w in q.split()]
        before = int(params.get("before", str(2**62)))
        limit = min(int(params.get("limit", "100")), 1000)
        rows = [
            e
            for e in reversed(self.events)
            if e.seq < before
            and params.get("topic") in (None, e.topic)
            and params.get("source") in (None, e.source)
            and e.timestamp >= params.get("since", "")
            and all(w in (e.event_id + bytes(e.payload).decode()).lower() for w in words)
        ]
        headers = {}
        if len(rows) > limit:
            link = f'</events?order=desc&before={rows[limit - 1].seq}&limit={limit}>; rel="next"'
            headers["Link"] = link
        return encoded(rows[:limit], headers=headers)

    @staticmethod
    def _not_found(request: httpx.Request) -> httpx.Response:
        message = f"no route {request.method} {request.url.path}"
        return encoded(ErrorBody("not_found", message), 404)
