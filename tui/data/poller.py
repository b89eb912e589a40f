"""One refresh of the whole dashboard: one request per panel, answered as a frozen snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

import httpx

from tui.data.backoff import Backoff
from tui.data.client import AggregatorClient, ServerError, describe
from tui.data.models import Health, ProtocolError, Stats, TopicRow
from tui.data.rates import RateMeter, Rates
from tui.data.tail import PollingTail, TailSource, TailUpdate

T = TypeVar("T")
FAILURES = (httpx.HTTPError, ServerError, ProtocolError)


class State(Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DEGRADED = "degraded"  # answers, but /health says the store cannot take writes
    ERROR = "error"  # answers with errors
    UNREACHABLE = "unreachable"  # no answer at all


@dataclass(frozen=True, slots=True)
class Connection:
    url: str
    state: State
    detail: str | None = None  # the error or the health reason
    uptime: float | None = None
    retry_in: float | None = None  # seconds until the timer tries again, after a failure


@dataclass(frozen=True, slots=True)
class Snapshot:
    connection: Connection
    stats: Stats | None  # the latest good one (may be stale when the connection is lost)
    rates: Rates | None
    topics: tuple[TopicRow, ...]
    topics_exact: bool  # from GET /topics; False: names from /stats only
    tail: TailUpdate | None  # None: paused or failed
    errors: dict[str, str] = field(default_factory=dict)  # panel -> what went wrong


@dataclass(frozen=True, slots=True)
class _Failed:
    error: str
    transport: bool


async def _attempt(call: Callable[[], Awaitable[T]]) -> T | _Failed:
    try:
        return await call()
    except FAILURES as exc:
        return _Failed(describe(exc), isinstance(exc, httpx.TransportError))


class Poller:
    """Owns the meters and cursors between refreshes; the app calls ``refresh`` on its timer
    when ``due`` says so, and at once when the user asks."""

    def __init__(
        self,
        client: AggregatorClient,
        *,
        interval: float,
        clock: Callable[[], float],
        tail: TailSource | None = None,
        tail_size: int = 100,
    ) -> None:
        self.client = client
        self.clock = clock
        self.backoff = Backoff(initial=interval, maximum=max(30.0, interval))
        self.meter = RateMeter()
        self.tail: TailSource = tail or PollingTail(client, tail_size)
        self.paused = False
        self._stats: Stats | None = None
        self._topics: list[TopicRow] | None = None
        self._last_seq: dict[str, int] = {}
        self._busy = False

    def due(self) -> bool:
        return not self._busy and self.backoff.ready(self.clock())

    @property
    def busy(self) -> bool:
        return self._busy

    async def refresh(self) -> Snapshot | None:
        """One round; ``None`` when a round is already out (a slow server is not piled on)."""
        if self._busy:
            return None
        self._busy = True
        try:
            return await self._refresh()
        finally:
            self._busy = False

    async def _refresh(self) -> Snapshot:
        async with asyncio.TaskGroup() as group:
            health_task = group.create_task(_attempt(self.client.health))
            stats_task = group.create_task(_attempt(self.client.stats))
            topics_task = group.create_task(_attempt(self.client.topics))
        health, stats, topics = health_task.result(), stats_task.result(), topics_task.result()
        errors: dict[str, str] = {}
        recovered = isinstance(stats, Stats) and self.backoff.failures > 0
        if isinstance(stats, Stats):
            self._stats = stats
            self.meter.observe(stats)
        else:
            errors["stats"] = stats.error
        if isinstance(topics, _Failed):
            errors["topics"] = topics.error
        else:
            self._topics = topics
        tail_update = None
        if recovered:  # a stream broken while the server was away need not wait out its backoff
            await self.tail.retry_now()
        if isinstance(stats, _Failed):  # the tail waits with the rest, and says so
            errors["tail"] = "stopped: " + (
                "the server does not answer" if stats.transport else "the server answers errors"
            )
        elif not self.paused:
            result = await _attempt(lambda: self.tail.poll(self._count))
            if isinstance(result, _Failed):
                errors["tail"] = result.error
            else:
                tail_update = result
                for event in result.events:
                    self._last_seq[event.topic] = max(self._last_seq.get(event.topic, 0), event.seq)
        connection = self._connection(health, stats)
        return Snapshot(
            connection,
            self._stats,
            self.meter.rates if isinstance(stats, Stats) else None,
            self._topic_rows(),
            self._topics is not None,
            tail_update,
            errors,
        )

    def _connection(self, health: Health | _Failed, stats: Stats | _Failed) -> Connection:
        url = self.client.url
        now = self.clock()
        failure = stats if isinstance(stats, _Failed) else None
        if failure is None and isinstance(health, _Failed) and health.transport:
            failure = health
        if failure is not None:
            self.backoff.failed(now)
            state = State.UNREACHABLE if failure.transport else State.ERROR
            return Connection(url, state, failure.error, None, self.backoff.retry_in(now))
        self.backoff.succeeded()
        assert isinstance(stats, Stats)
        if isinstance(health, _Failed):
            return Connection(url, State.DEGRADED, health.error, stats.uptime)
        if not health.ok:
            return Connection(url, State.DEGRADED, health.reason, stats.uptime)
        return Connection(url, State.CONNECTED, None, stats.uptime)

    def _count(self, topic: str | None) -> int | None:
        if topic is None:
            return self._stats.unique if self._stats else None
        for row in self._topics or ():
            if row.topic == topic:
                return row.unique
        return None

    def _topic_rows(self) -> tuple[TopicRow, ...]:
        if self._topics is not None:
            return tuple(self._topics)
        names = self._stats.topics if self._stats else ()
        return tuple(TopicRow(name, last_seq=self._last_seq.get(name)) for name in names)
