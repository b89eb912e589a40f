"""The live tail over ``GET /subscribe`` (Server-Sent Events), with ``GET /events`` as fallback.

``SubscribeTail`` is a ``TailSource``. After a ``select`` its first ``poll`` shows the newest page
(through ``PollingTail``: one ``GET /events``, skipping to the newest with ``offset``) and opens
one stream from that page's last ``seq``, so the stream starts at the newest events, with no gap
and no repeat. A task of its own reads the stream into a buffer; each ``poll`` hands the buffer
over. When the stream ends or fails, the task reopens it from its cursor (``after`` and
``Last-Event-ID``) after a backoff (1 s, doubling up to 30 s; reset once a stream opens), and
``poll`` reports the failure while nothing arrives. ``retry_now`` (the poller calls it when the
server answers again after failing) cuts the backoff short, so a tail never shows the error of a
server that is back.

A server without ``/subscribe`` (404) is followed with ``PollingTail`` instead, as before; each
``select`` asks again.

While the dashboard is paused it does not poll; the stream stays open and the buffer keeps only
the newest ``size`` events (what the tail could show anyway). When older ones were dropped, the
next update resets the view, so it never shows a gap as if it were continuous.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import httpx

from tui.data.backoff import Backoff
from tui.data.client import AggregatorClient, ServerError
from tui.data.models import Event, ProtocolError, parse_events
from tui.data.tail import CountHint, PollingTail, TailUpdate

LOGGER = logging.getLogger(__name__)
FAILURES = (httpx.HTTPError, ServerError, ProtocolError)


class EventStreamDecoder:
    """Server-Sent Events, one line at a time (as ``httpx.Response.aiter_lines`` gives them):
    ``data:`` lines are gathered until a blank line ends the message; comments (``:``),
    ``id:``, ``event:`` and ``retry:`` are read past (every message carries its ``seq``)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        """The event a blank line completes, else ``None``; raises ``ProtocolError``."""
        line = line.rstrip("\r\n")
        if not line:
            data, self._data = self._data, []
            return _event("\n".join(data)) if data else None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None


def _event(data: str) -> Event:
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise ProtocolError("/subscribe: a message's data is not JSON") from exc
    return parse_events([body])[0]


class SubscribeTail:
    """Follows ``GET /subscribe``; see the module's docstring. ``clock`` and ``sleep`` are the
    reconnect backoff's (tests pass a sleep that does not wait)."""

    def __init__(
        self,
        client: AggregatorClient,
        size: int = 100,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.size = size
        self.polling = PollingTail(client, size)
        self.backoff = Backoff(initial=1.0, maximum=30.0)
        self._clock = clock
        self._sleep = sleep
        self._topic: str | None = None
        self.filters: dict[str, str] = {}  # q and source of a filtered tail (``filter``)
        self._generation = 0  # bumped by select: a stale task or request drops what it got
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._fallback = False
        self._buffer: deque[Event] = deque(maxlen=size)
        self._skipped = False  # the buffer overflowed since the last poll
        self._cursor: int | None = None  # the newest seq received; None: not started
        self._error: BaseException | None = None  # why the stream is down; None: it is up
        self._moved = asyncio.Event()
        self._wake = asyncio.Event()  # set by retry_now: the backoff is cut short
        self._attempted = asyncio.Event()  # set (and replaced) after each reconnect attempt

    @property
    def topic(self) -> str | None:
        return self._topic

    @property
    def cursor(self) -> int | None:
        return self._cursor

    @property
    def error(self) -> BaseException | None:
        """Why the stream is down (it is being reopened); ``None`` while it is up."""
        return self._error

    @property
    def live(self) -> bool:
        """A stream task runs (connected or reconnecting); False before the first poll and
        when following ``/events`` instead."""
        return self._task is not None and not self._fallback

    @property
    def fallback(self) -> bool:
        """This server has no ``/subscribe``: the tail polls ``/events``."""
        return self._fallback

    def select(self, topic: str | None) -> None:
        self._topic = topic
        self._generation += 1
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._fallback = False
        self._buffer.clear()
        self._skipped = False
        self._cursor = None
        self._error = None
        self.polling.select(topic)

    def filter(self, filters: dict[str, str]) -> None:
        """Follow only the events these search filters admit (``q``, ``source``; ``{}``: all);
        the next update starts over with the newest of them."""
        self.filters = dict(filters)
        self.select(self._topic)

    async def poll(self, count: CountHint) -> TailUpdate:
        if self._fallback and self.filters:
            return await self._poll_filtered()
        if self._fallback:
            return await self.polling.poll(count)
        if self._task is None:
            return await self._start(count)
        if not self._buffer and self._error is not None:
            raise self._error.with_traceback(None)
        events = list(self._buffer)
        self._buffer.clear()
        reset, self._skipped = self._skipped, False
        return TailUpdate(events, reset)

    async def _poll_filtered(self) -> TailUpdate:
        """Without ``/subscribe``: the newest page of matches, what is past the cursor."""
        topic = {"topic": self._topic} if self._topic is not None else {}
        page = await self.client.search({**self.filters, **topic}, limit=self.size)
        fresh = [event for event in reversed(page.events) if event.seq > (self._cursor or 0)]
        if fresh:
            self._cursor = fresh[-1].seq
        return TailUpdate(fresh, False)

    async def wait_past(self, seq: int) -> None:
        """Until an event with ``seq`` or a later one has arrived on the stream."""
        while self._cursor is None or self._cursor < seq:
            await self._moved.wait()

    async def retry_now(self) -> None:
        """The server answers again: a stream waiting out its backoff is reopened now; returns
        once that attempt was made (so the next ``poll`` reports how it went)."""
        task = self._task
        if task is None or task.done() or self._error is None:
            return
        attempted = asyncio.ensure_future(self._attempted.wait())
        self._wake.set()
        try:
            await asyncio.wait((attempted, task), return_when=asyncio.FIRST_COMPLETED)
        finally:
            attempted.cancel()

    async def aclose(self) -> None:
        """Stops the stream; the source can be polled again afterwards (it starts afresh)."""
        self.select(self._topic)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _start(self, count: CountHint) -> TailUpdate:
        generation, topic = self._generation, self._topic
        if self.filters:  # the newest matches, then the stream of matches after them
            filters = {**self.filters, **({"topic": topic} if topic is not None else {})}
            page = await self.client.search(filters, limit=self.size)
            update = TailUpdate(page.events[::-1], True)
            after = page.events[0].seq if page.events else 0
            self._cursor = after
        else:
            update = await self.polling.poll(count)  # the newest page
            after = self.polling.cursor or 0
        if generation != self._generation:
            return TailUpdate([], False)  # select() ran while the request was out
        response: httpx.Response | None = None
        try:
            response = await self.client.subscribe(topic=topic, after=after, filters=self.filters)
        except FAILURES as exc:
            self._error = exc  # the task retries after the backoff
        else:
            if response is None:
                LOGGER.info("no GET /subscribe on %s: the tail polls /events", self.client.url)
                self._fallback = generation == self._generation
                return update
        if generation != self._generation:
            if response is not None:
                await response.aclose()
            return TailUpdate([], False)
        self._cursor = after
        task = asyncio.create_task(self._serve(response, topic, generation))
        self._task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return update

    async def _serve(self, response: httpx.Response | None, topic: str | None, gen: int) -> None:
        """Reads the stream, reopening it from the cursor whenever it ends, until cancelled."""
        while True:
            if response is not None:
                self.backoff.succeeded()
                self._error = None
                try:
                    await self._read(response, gen)
                except FAILURES as exc:
                    self._error = exc
                finally:
                    await response.aclose()
                LOGGER.info("/subscribe ended (%s); reopening", self._error or "closed")
            await self._nap(self.backoff.failed(self._clock()))
            try:
                response = await self.client.subscribe(
                    topic=topic, after=self._cursor or 0, filters=self.filters
                )
            except FAILURES as exc:
                self._error, response = exc, None
            else:
                if response is None:  # another server behind the URL, without /subscribe
                    self._fallback = True
                    self.polling.select(topic)
                    return
                self._error = None
            finally:
                self._wake.clear()
                attempted, self._attempted = self._attempted, asyncio.Event()
                attempted.set()

    async def _nap(self, delay: float) -> None:
        """The backoff's delay, cut short by ``retry_now``."""
        nap = asyncio.ensure_future(self._sleep(delay))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((nap, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            woken.cancel()

    async def _read(self, response: httpx.Response, generation: int) -> None:
        decoder = EventStreamDecoder()
        async for line in response.aiter_lines():
            event = decoder.feed(line)
            if event is None or generation != self._generation:
                continue
            if self._cursor is not None and event.seq <= self._cursor:
                continue  # never shown twice, whatever the server resends
            if len(self._buffer) == self._buffer.maxlen:
                self._skipped = True
            self._buffer.append(event)
            self._cursor = event.seq
            moved, self._moved = self._moved, asyncio.Event()
            moved.set()
