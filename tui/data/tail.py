"""The live tail: newest committed events, for all topics or one.

``TailSource`` is the seam: the dashboard asks a source for what is new once per interval.
``PollingTail`` follows ``GET /events?after=<seq>``; ``tui.data.subscribe.SubscribeTail`` keeps
one ``GET /subscribe`` (SSE) stream open in a task of its own, buffers what arrives and hands the
buffer over in ``poll`` (falling back to ``PollingTail`` on a server without it).
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

    async def retry_now(self) -> None:
        """The server answers again: a connection of the source's own that broke meanwhile is
        retried at once, not after its backoff; returns once that attempt is made."""

    async def aclose(self) -> None:
        """Stops whatever the source runs in the background (the app calls it on exit)."""


class PollingTail:
    """Follows ``GET /events?after=<cursor>``, one request per ``poll``.

    When the number of stored events is known (``/stats`` for all topics, ``/topics`` for one),
    it also knows how many of them lie at or before the cursor, so it can skip straight to the
    newest ``size`` with ``offset``: a busy server costs one page per interval, never a backlog,
    and the first poll is the newest page. When the count is unknown (a topic, and no
    ``/topics``) it follows page by page from the newest ``seq`` seen so far on any topic.
    """

    def __init__(self, client: AggregatorClient, size: int = 100) -> None:
        self.client = client
        self.size = size
        self._topic: str | None = None
        self._cursor: int | None = None  # None: not started
        self._before: int | None = None  # how many events of the topic have seq <= cursor
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

    async def retry_now(self) -> None:
        """Nothing to retry: each poll is a request of its own."""

    async def aclose(self) -> None:
        """Nothing runs between polls."""

    async def poll(self, count: CountHint) -> TailUpdate:
        topic, reset = self._topic, self._reset
        known = count(topic)
        if self._cursor is None or (
            known is not None and self._before is not None and known < self._before
        ):  # not started, or fewer events than before: a new store behind the same URL
            self._cursor, self._before = (0, 0) if known is not None else (self._newest_seen, None)
            reset = True
        offset = 0
        if known is not None and self._before is not None:
            offset = max(0, known - self._before - self.size)
        after = self._cursor
        page = await self.client.events(topic=topic, after=after, offset=offset, limit=self.size)
        if topic != self._topic or after != self._cursor:
            return TailUpdate([], False)  # select() ran while the request was out
        self._reset = False
        if page.events:
            self._cursor = page.events[-1].seq
            self._newest_seen = max(self._newest_seen, self._cursor)
            if self._before is not None:
                self._before += offset + len(page.events)
        return TailUpdate(page.events, reset)
