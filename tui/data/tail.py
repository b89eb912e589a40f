"""The live tail: newest committed events, for all topics or one.

``TailSource`` is the seam: the dashboard asks a source for what is new once per interval.
``PollingTail`` follows ``GET /events?after=<seq>``. A ``GET /subscribe`` (SSE) source would keep
one stream open in a task of its own, resuming with ``after``/``Last-Event-ID`` from its cursor,
buffer what arrives, and hand the buffer over in ``poll``; the dashboard would not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tui.data.client import AggregatorClient
from tui.data.models import Event

# How many events are stored for the topic (None: all topics); None when unknown.
CountHint = Callable[[str | None], int | None]


@dataclass(frozen=True, slots=True)
class TailUpdate:
    events: list[Event]  # new events, oldest first
    reset: bool  # the view starts over with these (new topic, or skipped ahead)


class TailSource(Protocol):
    @property
    def topic(self) -> str | None: ...

    def select(self, topic: str | None) -> None:
        """Follow another topic (``None``: all); the next update resets the view."""

    async def poll(self, count: CountHint) -> TailUpdate:
        """What is new since the last call; raises what ``AggregatorClient`` raises."""
        ...


class PollingTail:
    """Follows ``GET /events`` with the ``after`` cursor, one request per ``poll``.

    Without a cursor (at start, after ``select``, or when it fell more than a page behind) it
    jumps to the newest ``size`` events with ``offset = count - size``, the count coming from
    ``/stats`` or ``/topics``. When the count is unknown (a topic, and no ``/topics``) it follows
    from the newest ``seq`` seen so far on any topic.
    """

    def __init__(self, client: AggregatorClient, size: int = 100) -> None:
        self.client = client
        self.size = size
        self._topic: str | None = None
        self._cursor: int | None = None
        self._newest_seen = 0
        self._reset = True

    @property
    def topic(self) -> str | None:
        return self._topic

    @property
    def cursor(self) -> int | None:
        return self._cursor

    def select(self, topic: str | None) -> None:
        self._topic = topic
        self._cursor = None
        self._reset = True

    async def poll(self, count: CountHint) -> TailUpdate:
        topic, reset = self._topic, self._reset
        known = count(topic) if self._cursor is None else None
        if self._cursor is not None:
            page = await self.client.events(topic=topic, after=self._cursor, limit=self.size)
        elif known is not None:
            offset = max(0, known - self.size)
            page = await self.client.events(topic=topic, offset=offset, limit=self.size)
            reset = True
        else:
            page = await self.client.events(topic=topic, after=self._newest_seen, limit=self.size)
        if topic != self._topic:  # select() ran while the request was out: drop the answer
            return TailUpdate([], False)
        self._reset = False
        if page.events:
            self._cursor = page.events[-1].seq
            self._newest_seen = max(self._newest_seen, self._cursor)
        elif self._cursor is None and known is None:
            self._cursor = self._newest_seen
        if page.more and count(topic) is not None:
            self._cursor = None  # more than a page behind: jump to the newest next time
        return TailUpdate(page.events, reset)
