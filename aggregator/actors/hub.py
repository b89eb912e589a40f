"""The hub and the tail actor: live fan-out of committed events, with the store as the truth.

The writer calls ``Hub.notify`` after each COMMIT (it never blocks). The tail actor wakes, reads
``events(after=cursor)`` from the store once, encodes each row once as an SSE frame, and offers
the frames to every live subscription's bounded buffer: one store read per commit (or fewer:
wake-ups coalesce), whatever the number of subscribers. Events committed by other processes
sharing the store are picked up the same way when ``tail_poll_seconds`` wakes the tail.

A subscription whose buffer would overflow is marked *lagged* and dropped from the fan-out; its
stream goes back to replaying from the store at its own cursor (``aggregator/front/stream.py``).
Neither the writer nor the other subscribers ever wait for a slow one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import trio

from aggregator.actors.readers import ReaderPool
from aggregator.actors.replay import ReplayCache
from aggregator.actors.sse import Frame, encode_all
from aggregator.incidents import Incidents
from aggregator.store import ReadStore, StoreDamaged, StoreUnavailable

LOGGER = logging.getLogger(__name__)
TAIL_PAGE = 1000  # rows per tail read; a commit larger than this takes several reads


class HubClosed(Exception):
    """The server is shutting down: no new subscriptions."""


@dataclass(frozen=True, slots=True)
class HubStatistics:
    active: int  # live subscriptions
    lagged: int  # subscriptions switched back to replay because their buffer was full, in total
    tail_reads: int  # store reads by the tail, in total
    tail_cursor: int  # the last seq the tail has fanned out
    closed: bool


class Subscription:
    """One subscriber's bounded buffer: the tail fills it, the subscriber's stream drains it."""

    def __init__(self, topic: str | None, limit: int, limit_bytes: int = 2**62) -> None:
        self.topic = topic
        self.lagged = False  # the buffer overflowed: frames were lost here, replay from the store
        self.closed = False  # the hub closed: the stream should end
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._batches: list[Sequence[Frame]] = []
        self._size = 0
        self._bytes = 0
        self._wake = trio.Event()

    def offer(self, frames: Sequence[Frame], size: int | None = None) -> bool:
        """Take ``frames`` (already for this topic; ``size`` their bytes) without blocking;
        False when it lags now."""
        size = _bytes(frames) if size is None else size
        if self._size + len(frames) > self._limit or self._bytes + size > self._limit_bytes:
            self.lagged = True
            self._batches.clear()
            self._size = self._bytes = 0
            self._wake.set()
            return False
        self._batches.append(frames)
        self._size += len(frames)
        self._bytes += size
        self._wake.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def receive(self) -> list[Frame]:
        """Everything buffered, waiting until there is some; ``[]`` once lagged or closed."""
        while not (self._batches or self.lagged or self.closed):
            await self._wake.wait()
            self._wake = trio.Event()
        if self.lagged or self.closed:
            return []
        frames = [frame for batch in self._batches for frame in batch]
        self._batches.clear()
        self._size = self._bytes = 0
        return frames


class Hub:
    """The live subscriptions, the tail's wake-up signal, and their counters."""

    def __init__(
        self,
        *,
        buffer_events: int,
        buffer_bytes: int = 2**62,
        replay: ReplayCache | None = None,
    ) -> None:
        self._buffer_events = buffer_events
        self._buffer_bytes = buffer_bytes
        self.replay = ReplayCache() if replay is None else replay  # shared by replaying streams
        self._subscriptions: set[Subscription] = set()
        self._wake_send, self.wake = trio.open_memory_channel[None](1)
        self._lagged = 0
        self._tail_reads = 0
        self._tail_cursor = 0
        self._closed = False
        self._advanced = trio.Event()
        self.subscribed = 0  # subscriptions ever made: tells the tail one came while it looked away

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def cursor(self) -> int:
        """The last seq the tail has fanned out: everything up to it is committed and visible."""
        return self._tail_cursor

    @property
    def active(self) -> bool:
        return bool(self._subscriptions)

    def notify(self) -> None:
        """Something was committed: wake the tail. Never blocks; wake-ups coalesce."""
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._wake_send.send_nowait(None)

    def subscribe(self, topic: str | None) -> Subscription:
        if self._closed:
            raise HubClosed("the server is shutting down")
        subscription = Subscription(topic, self._buffer_events, self._buffer_bytes)
        self._subscriptions.add(subscription)
        self.subscribed += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every live stream and the tail (shutdown begins)."""
        self._closed = True
        self._wake_send.close()
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()

    def fan_out(self, frames: list[Frame], cursor: int) -> None:
        """Offer frames (in seq order, all above the previous cursor) to every subscription."""
        self._tail_reads += 1
        self._tail_cursor = cursor
        self._advanced.set()
        self._advanced = trio.Event()
        if not frames or not self._subscriptions:
            return
        by_topic: dict[str, list[Frame]] = {}
        sizes: dict[str | None, int] = {None: 0}
        for frame in frames:
            by_topic.setdefault(frame.topic, []).append(frame)
            sizes[frame.topic] = sizes.get(frame.topic, 0) + len(frame.data)
            sizes[None] += len(frame.data)
        for subscription in list(self._subscriptions):
            chosen = frames if subscription.topic is None else by_topic.get(subscription.topic)
            if chosen and not subscription.offer(chosen, sizes[subscription.topic]):
                self._lagged += 1
                self._subscriptions.discard(subscription)

    async def wait_fanned_out(self, seq: int) -> None:
        """Wait until the tail has offered every event up to ``seq`` to the subscriptions."""
        while self._tail_cursor < seq:
            await self._advanced.wait()

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            len(self._subscriptions),
            self._lagged,
            self._tail_reads,
            self._tail_cursor,
            self._closed,
        )


def _bytes(frames: Sequence[Frame]) -> int:
    return sum(len(frame.data) for frame in frames)


def _read_after(cursor: int, reader: ReadStore) -> list[Frame]:
    return encode_all(reader.events(None, cursor, TAIL_PAGE, 0))


def _head(reader: ReadStore) -> int:
    """The last readable seq: where the tail starts (everything before is replay)."""
    return reader.head()


async def run_tail(
    hub: Hub,
    readers: ReaderPool,
    *,
    poll_seconds: float = 0.0,
    incidents: Incidents | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Fan out what is committed until the hub closes.

    A bug met in one round is logged and counted, and the tail tries again at the next wake-up
    from the same cursor: subscribers wait, they never miss an event, and the server goes on.
    """
    incidents = Incidents() if incidents is None else incidents
    cursor = await readers.run(_head)
    hub.fan_out([], cursor)
    async with hub.wake:
        task_status.started()
        while True:
            with trio.move_on_after(poll_seconds if poll_seconds > 0 else float("inf")):
                try:
                    await hub.wake.receive()
                except trio.EndOfChannel:
                    return
            try:
                head = await _skip_unwatched(hub, readers, cursor)
                cursor = head if head is not None else await _read_new(hub, readers, cursor)
            except StoreDamaged:
                pass  # reported by the reader pool: the server is stopping
            except Exception as exc:
                incidents.record("tail", exc, f"reading the events after seq {cursor}")


async def _skip_unwatched(hub: Hub, readers: ReaderPool, cursor: int) -> int | None:
    """With nobody subscribed, move the cursor to the head instead of reading and encoding rows;
    the new cursor, or None when the rows must be read after all.

    Not if a subscription was made meanwhile: one that registered during the read may have
    finished its replay below the head and count on the tail for the rest.
    """
    if hub.active or hub.closed:
        return None
    subscribed = hub.subscribed
    try:
        head = await readers.run(_head)
    except StoreUnavailable:
        return None
    if hub.subscribed != subscribed:
        return None
    if head > cursor:
        hub.fan_out([], head)
    return max(head, cursor)


async def _read_new(hub: Hub, readers: ReaderPool, cursor: int) -> int:
    """Read and fan out everything after ``cursor``; the new cursor."""
    while not hub.closed:
        try:
            frames = await readers.run(partial(_read_after, cursor))
        except StoreUnavailable as exc:
            # The subscribers keep waiting; the next commit (or poll) tries again.
            LOGGER.warning("the tail could not read new events: %s", exc)
            break
        if frames:
            cursor = frames[-1].seq
        hub.fan_out(frames, cursor)
        if len(frames) < TAIL_PAGE:
            break
    return cursor
