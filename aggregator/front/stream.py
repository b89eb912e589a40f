"""One subscriber's SSE stream: replay from the store, then live from the hub, never a gap or a
repeat.

The order of steps is what makes the switch exact:

1. subscribe to the hub first: from now on the tail offers this stream every event above the
   tail's cursor at that moment;
2. replay from the store, page by page, from the stream's cursor until a short page: that covers
   every event up to the tail's cursor at step 1 (the tail read them from the same store), and
   maybe more;
3. go live: take what the hub buffered, dropping what replay already sent (``seq <= cursor``).

A subscription that lags (its buffer overflowed) is dropped by the hub; the stream goes back to
step 1 from its own cursor. So a slow client costs the server at most one store read per page it
consumes, never the writer's time or other subscribers' buffers; streams of all topics share
their replay reads below the tail's cursor (``aggregator/actors/replay.py``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing

import trio

from aggregator.actors.hub import Hub, HubClosed, Subscription
from aggregator.actors.readers import ReaderPool
from aggregator.actors.sse import (
    HEARTBEAT,
    OPENING,
    SHUTTING_DOWN,
    STORE_UNAVAILABLE,
    Frame,
    encode_all,
    internal_error,
)
from aggregator.incidents import Incidents
from aggregator.store import StoreDamaged, StoreUnavailable

REPLAY_PAGE = 1000
PIECE_BYTES = 256 * 1024  # bytes handed to the connection at a time


async def stream_events(
    hub: Hub,
    readers: ReaderPool,
    topic: str | None,
    after: int,
    *,
    heartbeat_seconds: float,
    incidents: Incidents | None = None,
) -> AsyncIterator[bytes]:
    """The body of ``GET /subscribe``: SSE messages for every event of ``topic`` after ``after``,
    until the client goes away or the server shuts down. A bug ends this stream alone, with a
    last message naming it; the client resumes from its last id."""
    incidents = Incidents() if incidents is None else incidents
    async with aclosing(_stream(hub, readers, topic, after, heartbeat_seconds)) as messages:
        try:
            async for message in messages:
                yield message
        except Exception as exc:
            yield internal_error(incidents.record("subscribe", exc, f"streaming topic {topic!r}"))


async def _stream(
    hub: Hub, readers: ReaderPool, topic: str | None, after: int, heartbeat_seconds: float
) -> AsyncGenerator[bytes, None]:
    try:
        subscription = hub.subscribe(topic)
    except HubClosed:
        yield SHUTTING_DOWN
        return
    cursor = after
    opening = OPENING
    while True:
        try:
            # Subscribed before the first byte: a client that has the opening is in the fan-out.
            # Sent inside this ``try``: a client gone before it took the opening must not leave
            # its subscription in the hub (counted, and fed, for ever).
            if opening:
                yield opening
                opening = b""
            # Step 2: replay until a short page.
            while True:
                try:
                    frames, cursor, ended = await _replay(hub, readers, topic, cursor)
                except StoreUnavailable:
                    yield STORE_UNAVAILABLE
                    return
                except StoreDamaged as exc:  # reported by the reader pool: the server stops
                    reason = str(exc).replace("\n", " ")
                    yield f": {reason}; the server is stopping\n\n".encode()
                    return
                # A page is sent in pieces: a slow client holds one piece of bytes, not a copy
                # of the whole page (its frames are shared with the replay cache).
                for piece in _pieces(frames):
                    yield piece
                del frames
                if ended or hub.closed:
                    break
            # Step 3: live, until the subscription lags or the hub closes.
            while not (subscription.lagged or subscription.closed):
                live = await _receive(subscription, heartbeat_seconds)
                if live is None:
                    yield HEARTBEAT
                    continue
                fresh = [frame for frame in live if frame.seq > cursor]
                del live
                if fresh:
                    cursor = fresh[-1].seq
                    for piece in _pieces(fresh):
                        yield piece
                    del fresh
        finally:
            hub.unsubscribe(subscription)
        # Lagged: back to step 1 from our own cursor, unless the server is shutting down.
        try:
            if subscription.closed:
                raise HubClosed
            subscription = hub.subscribe(topic)
        except HubClosed:
            yield SHUTTING_DOWN
            return


def _pieces(frames: list[Frame]) -> Iterator[bytes]:
    """The frames' bytes in pieces of about ``PIECE_BYTES`` (a frame is never split)."""
    start = size = 0
    for end, frame in enumerate(frames, 1):
        size += len(frame.data)
        if size >= PIECE_BYTES:
            yield b"".join(f.data for f in frames[start:end])
            start, size = end, 0
    if start < len(frames):
        yield b"".join(f.data for f in frames[start:])


async def _replay(
    hub: Hub, readers: ReaderPool, topic: str | None, cursor: int
) -> tuple[list[Frame], int, bool]:
    """The next frames after ``cursor``, the cursor after them, and whether that was a short
    page (replay has caught up). All topics below the tail's cursor: a shared block."""
    if topic is None:
        block = await hub.replay.after(readers, cursor, hub.cursor)
        if block is not None:
            frames, end = block
            return frames, end, False  # a block's seqs without a row will never have one
    frames = await readers.run(lambda r: encode_all(r.events(topic, cursor, REPLAY_PAGE, 0)))
    return frames, frames[-1].seq if frames else cursor, len(frames) < REPLAY_PAGE


async def _receive(subscription: Subscription, heartbeat_seconds: float) -> list[Frame] | None:
    """What the hub buffered; None when nothing came within the heartbeat interval."""
    with trio.move_on_after(heartbeat_seconds):
        return await subscription.receive()
    return None
