"""The store's upkeep, done by the writer between group commits, one small step at a time.

Two kinds of work share the step (``WriteStore.maintain``): index work the store deferred off
the commit path (SQLite merges a bucket of recent keys into its key table) and retention
(deleting the oldest events past ``AGGREGATOR_RETENTION_SECONDS`` or beyond
``AGGREGATOR_RETENTION_BYTES``). The single writer runs them, so they never contend with a
commit for the write lock: after each commit one step, and while a step reports more work and
no request waits, the next; with nothing to commit, a step every ``idle_seconds`` (age expires
with no traffic too). A step is bounded (``step_events``), so a request arriving meanwhile
waits for one step at most.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

import trio

from aggregator.incidents import Incidents
from aggregator.store import Retention, StoreBroken, StoreUnavailable, Upkeep, WriteStore

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpkeepPlan:
    retention: Retention = field(default_factory=Retention)
    step_events: int = 5_000  # the most events one retention step deletes
    idle_seconds: float = 1.0  # with no request, a step this often


async def upkeep_step(
    store: WriteStore, plan: UpkeepPlan, incidents: Incidents, *, reclaim: bool = False
) -> Upkeep:
    """One step on a worker thread. A failure is logged and the writer goes on: the next step
    tries again."""
    try:
        step = partial(store.maintain, plan.retention, plan.step_events, reclaim=reclaim)
        result: Upkeep = await trio.to_thread.run_sync(step)
    except StoreUnavailable as exc:
        LOGGER.warning("upkeep step failed, rolled back: %s", exc)
        return Upkeep(0, more=False)
    except StoreBroken:
        raise
    except Exception as exc:  # a bug: the store rolled back; commits go on
        incidents.record("writer", exc, "an upkeep step (retention, index merge)")
        return Upkeep(0, more=False)
    if result.expired:
        LOGGER.debug("retention deleted %d events", result.expired)
    return result


def disk_full(reason: str) -> bool:
    """Whether a store error says a write did not fit: the disk is full (SQLITE_FULL), or a
    write failed (SQLITE_IOERR_WRITE: EFBIG past a file size limit, or ENOSPC on some
    systems)."""
    return "SQLITE_FULL" in reason or "SQLITE_IOERR_WRITE" in reason or "is full" in reason
