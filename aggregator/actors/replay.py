"""Replay of all topics, shared by every stream: the store is read once per block, not per stream.

A subscriber that lags goes back to replaying from the store at its own cursor
(``aggregator/front/stream.py``). When many lag together (a burst, a slow network), each would
read and encode the same rows again, and the replays together could fall further behind than the
subscribers did. Instead, streams of all topics replay in aligned blocks of ``block`` seqs,
``(k·block, (k+1)·block]``. A block that ends at or below the tail's cursor is committed and
visible and will never change, so it is kept for the next stream that needs it (the ``kept`` most
recently used blocks), and streams that miss the same block at once wait for one read of it.

Streams of one topic read their own pages as before: aligned blocks would read every topic's rows
to find a sparse topic's few.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import trio

from aggregator.actors.readers import ReaderPool
from aggregator.actors.sse import Frame, encode_all
from aggregator.store import ReadStore

BLOCK = 1000  # seqs per block: a replay page of the old kind
KEPT = 64  # blocks kept: at most 64,000 encoded events, ~20 MB with 64-byte payloads
KEPT_BYTES = 64 * 1024 * 1024  # and at most this many bytes of frames: large payloads


class ReplayCache:
    """Complete blocks of encoded frames of all topics, most recently used kept."""

    def __init__(
        self, *, block: int = BLOCK, kept: int = KEPT, kept_bytes: int = KEPT_BYTES
    ) -> None:
        self.block = block
        self._kept = kept
        self._kept_bytes = kept_bytes
        self._bytes = 0  # of the blocks kept
        self._blocks: OrderedDict[int, list[Frame]] = OrderedDict()
        self._sizes: dict[int, int] = {}
        self._reading: dict[int, trio.Event] = {}
        self.reads = 0  # blocks read from the store, in total
        self.hits = 0  # blocks served from memory, in total

    async def after(
        self, readers: ReaderPool, cursor: int, complete_to: int
    ) -> tuple[list[Frame], int] | None:
        """The frames after ``cursor`` to the end of its block, and that end (the next cursor),
        if the block ends at or below ``complete_to``; None if it does not (the live edge is
        read by the stream itself)."""
        index = cursor // self.block
        end = (index + 1) * self.block
        if end > complete_to:
            return None
        frames = await self._get(readers, index)
        return [frame for frame in frames if frame.seq > cursor], end

    async def _get(self, readers: ReaderPool, index: int) -> list[Frame]:
        while (pending := self._reading.get(index)) is not None:
            await pending.wait()  # another stream reads this block now
        frames = self._blocks.get(index)
        if frames is not None:
            self._blocks.move_to_end(index)
            self.hits += 1
            return frames
        done = self._reading[index] = trio.Event()
        try:
            frames = await readers.run(partial(_read_block, index * self.block, self.block))
            self.reads += 1
            self._keep(index, frames)
            return frames
        finally:
            # On failure nothing is kept: a waiter finds neither block nor reader and reads.
            del self._reading[index]
            done.set()

    def _keep(self, index: int, frames: list[Frame]) -> None:
        size = sum(len(frame.data) for frame in frames)
        if size > self._kept_bytes:  # one block over the bound: served, not kept
            return
        self._blocks[index] = frames
        self._sizes[index] = size
        self._bytes += size
        while len(self._blocks) > self._kept or self._bytes > self._kept_bytes:
            oldest, _ = self._blocks.popitem(last=False)
            self._bytes -= self._sizes.pop(oldest)

    @property
    def kept_bytes(self) -> int:
        """Bytes of frames kept now."""
        return self._bytes


def _read_block(start: int, size: int, reader: ReadStore) -> list[Frame]:
    # At most ``size`` seqs lie in the block, so one page after ``start`` holds all of its rows;
    # with gaps in seq (PostgreSQL's abandoned reservations) it may run past the block's end.
    rows = reader.events(None, start, size, 0)
    return encode_all([row for row in rows if row.seq <= start + size])
