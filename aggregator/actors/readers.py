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
        self, idle: trio.MemorySendChannel[ReadStore], waiting: trio.MemoryReceiveChannel[ReadStore]
    ) -> None:
        self._idle = idle
        self._waiting = waiting

    async def run(self, call: Callable[[ReadStore], T]) -> T:
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
        yield ReaderPool(idle, waiting)
    finally:
        for reader in readers:
            reader.close()
