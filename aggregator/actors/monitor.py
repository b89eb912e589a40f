"""The writer's monitor: its counters and health, written by the writer alone, read by anyone.

``/health``, ``/metrics`` and the tests read a ``WriterStatistics`` snapshot; the writer
replaces it at each change. ``busy`` marks a call into the store, so that a call that never
returns (a disk or database that stopped answering) shows as ``stalled``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    transactions: int
    failed_transactions: int
    requests: int
    events: int
    stored: int
    max_requests_per_transaction: int
    running: bool
    last_error: str | None  # set by a failed transaction, cleared by the next good one
    upkeep_steps: int = 0  # upkeep steps done (retention, index merges)
    upkeep_more: bool = True  # the last step said more work was waiting
    expired: int = 0  # events they deleted
    # trio.current_time() when the writer's current call into the store (a transaction, a
    # probe, an upkeep step) began; None between them. /health reads it: a store call that
    # never returns is an outage too.
    busy_since: float | None = None


class WriterMonitor:
    """The writer's counters, written only by the writer; anyone may read a snapshot, or wait
    for a change.

    ``stall_seconds``: how long one call into the store may run before ``stalled`` reports it
    (a disk or network that stopped answering: the writer waits on its thread for ever)."""

    def __init__(self, stall_seconds: float = math.inf) -> None:
        self._stats = WriterStatistics(0, 0, 0, 0, 0, 0, False, None)
        self._changed = trio.Event()
        self._stall_seconds = stall_seconds

    def statistics(self) -> WriterStatistics:
        return self._stats

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Around one call into the store, on the writer's thread."""
        self.update(busy_since=trio.current_time())
        try:
            yield
        finally:
            self.update(busy_since=None)

    def stalled(self) -> float | None:
        """How long the store's current call has run, once that is over ``stall_seconds``."""
        since = self._stats.busy_since
        if since is None:
            return None
        running = trio.current_time() - since
        return running if running > self._stall_seconds else None

    def update(self, **changes: Any) -> None:
        self._stats = dataclasses.replace(self._stats, **changes)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[WriterStatistics], bool]) -> None:
        """Return once ``condition`` holds for the statistics (checked at each update)."""
        while not condition(self._stats):
            await self._changed.wait()
