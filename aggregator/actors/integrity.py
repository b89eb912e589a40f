"""A damaged store stops the server: the background integrity check, and damage met anywhere.

SQLite finds a damaged page only when something reads it (issue 19, item 17). Two ways to meet
it, one answer:

- ``run_integrity_check`` checks every page (``PRAGMA quick_check``) on a worker thread with a
  read-only connection of its own, once the server is ready: per million events 0.3 s cached,
  ~4 s from disk, too long to hold readiness for (docs/reliability.md, "A damaged store").
- The writer, a reader (``ReaderPool``), upkeep or the checkpointer meets ``SQLITE_CORRUPT`` or
  ``SQLITE_NOTADB`` and raises ``StoreDamaged``.

Either is reported to ``IntegrityMonitor.damaged``: the first report is logged and stops the
server (``on_damaged``: the service's shutdown), whose requests in flight are answered, and
``serve`` then raises it; the process exits 1 with one line naming the file and what to do.
Never "retry later": no retry can read a damaged page.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from aggregator.store import CheckInterrupted, IntegrityCheck, StoreDamaged, StoreUnavailable

LOGGER = logging.getLogger(__name__)
# What the check's state can be; the metric's label values, fixed.
STATES = ("off", "pending", "running", "passed", "damaged", "failed")


@dataclass(frozen=True, slots=True)
class IntegrityStatistics:
    check: str  # one of STATES; "off" also for PostgreSQL
    seconds: float | None = None  # how long the finished check took
    damage: str | None = None  # the first damage reported, by anyone


class IntegrityMonitor:
    """The check's state and the first damage reported; written on the trio thread only."""

    def __init__(self, on_damaged: Callable[[], None], *, checking: bool) -> None:
        self._on_damaged = on_damaged
        self._stats = IntegrityStatistics("pending" if checking else "off")
        self._damage: StoreDamaged | None = None

    def statistics(self) -> IntegrityStatistics:
        return self._stats

    def update(self, **changes: Any) -> None:
        self._stats = dataclasses.replace(self._stats, **changes)

    def damaged(self, exc: StoreDamaged) -> None:
        """Someone met damage: the first report stops the server; later ones add nothing."""
        if self._damage is not None:
            return
        self._damage = exc
        LOGGER.critical("%s; stopping", exc)
        self.update(damage=str(exc))
        self._on_damaged()

    def raise_damage(self) -> None:
        """Raise the damage reported, if any: the reason the server stopped."""
        if self._damage is not None:
            raise self._damage


async def run_integrity_check(check: IntegrityCheck, monitor: IntegrityMonitor) -> None:
    """Run ``check`` once on a worker thread; cancelled (the server stops), it interrupts the
    check and returns at once."""
    monitor.update(check="running")
    LOGGER.info("checking the store's integrity (PRAGMA %s) in the background", check.pragma)
    started = time.perf_counter()
    try:
        await trio.to_thread.run_sync(check.run, abandon_on_cancel=True)
    except trio.Cancelled:
        check.interrupt()  # the abandoned thread's statement stops within milliseconds
        raise
    except CheckInterrupted:
        return
    except StoreDamaged as exc:
        monitor.update(check="damaged", seconds=time.perf_counter() - started)
        monitor.damaged(exc)
        return
    except StoreUnavailable as exc:
        monitor.update(check="failed", seconds=time.perf_counter() - started)
        LOGGER.warning("the store's integrity check could not run: %s", exc)
        return
    seconds = time.perf_counter() - started
    monitor.update(check="passed", seconds=seconds)
    LOGGER.info("the store passed its integrity check (PRAGMA %s) in %.2f s", check.pragma, seconds)
