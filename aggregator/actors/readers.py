"""The reader pool: read-only store connections, each used by one worker thread at a time.

A read that finds the store damaged (``StoreDamaged``) is reported to ``on_damaged``, which stops
the server (``aggregator/actors/integrity.py``), and raised to its caller as well, who answers
its request with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from aggregator.store import ReadStore, StoreDamaged

T = TypeVar("T")


class ReaderPool:
    """Runs read calls on threads, each with a connection checked out of the pool."""

    def __init__(
        self,
        idle: trio.MemorySendChannel[ReadStore],
        waiting: trio.MemoryReceiveChannel[ReadStore],
        on_damaged: Callable[[StoreDamaged], None] | None = None,
        *,
        size: int = 1,
    ) -> None:
        self._idle = idle
        self._waiting = waiting
        self._on_damaged = on_damaged
        # A full-text search can take seconds (a short prefix expands to every word it starts),
        # and anyone can ask many at once: searches hold all readers but one, so /health and
        # the other reads always find a reader soon.
        self._searches = trio.CapacityLimiter(max(1, size - 1))

    def reader_free(self) -> bool:
        """A reader is free: a read started before the next checkpoint takes it at once."""
        return self._waiting.statistics().current_buffer_used > 0

    async def run(self, call: Callable[[ReadStore], T], *, search: bool = False) -> T:
        """``call`` on a reader; ``search``: a full-text search (see ``__init__``)."""
        if search:
            async with self._searches:
                return await self._run(call)
        return await self._run(call)

    async def _run(self, call: Callable[[ReadStore], T]) -> T:
        try:  # an idle reader is taken without a checkpoint: the thread's start is one
            reader = self._waiting.receive_nowait()
        except trio.WouldBlock:
            reader = await self._waiting.receive()
        try:
            return await trio.to_thread.run_sync(call, reader)
        except StoreDamaged as exc:
            if self._on_damaged is not None:
                self._on_damaged(exc)
            raise
        finally:
            self._idle.send_nowait(reader)


@asynccontextmanager
async def open_reader_pool(
    open_reader: Callable[[], ReadStore],
    size: int,
    on_damaged: Callable[[StoreDamaged], None] | None = None,
) -> AsyncIterator[ReaderPool]:
    """``size`` connections opened on threads, all closed on exit."""
    idle, waiting = trio.open_memory_channel[ReadStore](size)
    readers = [await trio.to_thread.run_sync(open_reader) for _ in range(size)]
    for reader in readers:
        idle.send_nowait(reader)
    try:
        yield ReaderPool(idle, waiting, on_damaged, size=size)
    finally:
        for reader in readers:
            reader.close()
