"""The reader pool: read-only store connections, each used by one worker thread at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from aggregator.store import ReadStore

T = TypeVar("T")


class ReaderPool:
    """Runs read calls on threads, each with a connection checked out of the pool."""

    def __init__(
        self,
        idle: trio.MemorySendChannel[ReadStore],
        waiting: trio.MemoryReceiveChannel[ReadStore],
        *,
        size: int = 1,
    ) -> None:
        self._idle = idle
        self._waiting = waiting
        # A full-text search can take seconds (a short prefix expands to every word it starts),
        # and anyone can ask many at once: searches hold all readers but one, so /health and
        # the other reads always find a reader soon.
        self._searches = trio.CapacityLimiter(max(1, size - 1))

    async def run(self, call: Callable[[ReadStore], T], *, search: bool = False) -> T:
        """``call`` on a reader; ``search``: a full-text search (see ``__init__``)."""
        if search:
            async with self._searches:
                return await self._run(call)
        return await self._run(call)

    async def _run(self, call: Callable[[ReadStore], T]) -> T:
        reader = await self._waiting.receive()
        try:
            return await trio.to_thread.run_sync(call, reader)
        finally:
            self._idle.send_nowait(reader)


@asynccontextmanager
async def open_reader_pool(
    open_reader: Callable[[], ReadStore], size: int
) -> AsyncIterator[ReaderPool]:
    """``size`` connections opened on threads, all closed on exit."""
    idle, waiting = trio.open_memory_channel[ReadStore](size)
    readers = [await trio.to_thread.run_sync(open_reader) for _ in range(size)]
    for reader in readers:
        idle.send_nowait(reader)
    try:
        yield ReaderPool(idle, waiting, size=size)
    finally:
        for reader in readers:
            reader.close()
