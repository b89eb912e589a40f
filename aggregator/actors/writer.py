"""The writer actor: the single owner of the write connection, doing group commit.

It takes the first waiting request, drains every other one already waiting (up to
``max_txn_events``; one request is never split), commits them in one transaction on its own
thread, and only then answers each request. Under load this is one fsync for many requests.

Faults, per kind (docs/reliability.md, "Fault isolation"): a store that cannot take writes
(``StoreUnavailable``: disk full, read-only, a table locked elsewhere) answers 503 to the
transaction's requests and the writer probes until it recovers. A lock wait that ran out on a
row only some requests need (``StoreContention``: one key held by another session) is retried
one request at a time, so only the requests that need that row get the 503. A bug met in a
transaction (any other exception; the store has rolled back) is retried one request at a time,
so only the request that meets it gets a 500. A connection whose state is unknown
(``StoreBroken``: a failed rollback) is crash-only: the writer never touches it again, calls
``on_broken`` (the service stops accepting), answers 503 to every request still coming, and
raises once its inbox closes; the process exits non-zero with the reason, and a supervisor
restarts it on the intact store. A damaged file (``StoreDamaged``, a kind of ``StoreBroken``)
takes the same path; the process's last line then says how to restore or recover it.

Between commits the writer also does the store's upkeep, a small step at a time
(``aggregator/actors/upkeep.py``): index work the store deferred, and retention.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import trio

from aggregator.actors.monitor import WriterMonitor
from aggregator.actors.upkeep import UpkeepPlan, disk_full, upkeep_step
from aggregator.incidents import Incidents
from aggregator.messages import Accepted, Internal, Unavailable, WriteOutcome, WriteRequest
from aggregator.store import (
    StoreBroken,
    StoreContention,
    StoreDamaged,
    StoreUnavailable,
    WriteStore,
)

# A probe writes about twice the bytes of the transaction that failed (indexes roughly double
# them), within these bounds, so that "it works again" means a transaction of that size fits.
MIN_PROBE_BYTES = 64 * 1024
MAX_PROBE_BYTES = 16 * 1024 * 1024

LOGGER = logging.getLogger(__name__)


def _take_batch(
    first: WriteRequest, inbox: trio.MemoryReceiveChannel[WriteRequest], max_events: int
) -> tuple[list[WriteRequest], WriteRequest | None]:
    """``first`` and what already waits, within ``max_events``; and the one that did not fit."""
    batch, size = [first], len(first.events)
    while size < max_events:
        try:
            nxt = inbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return batch, None
        if size + len(nxt.events) > max_events:
            return batch, nxt
        batch.append(nxt)
        size += len(nxt.events)
    return batch, None


def _reply(request: WriteRequest, outcome: WriteOutcome) -> None:
    # The requester may be gone (client disconnected); the commit stands regardless.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        request.reply.send_nowait(outcome)


async def run_writer(
    inbox: trio.MemoryReceiveChannel[WriteRequest],
    store: WriteStore,
    monitor: WriterMonitor,
    *,
    max_txn_events: int,
    on_commit: Callable[[], None] | None = None,
    on_broken: Callable[[], None] | None = None,
    probe_seconds: float = 1.0,
    incidents: Incidents | None = None,
    upkeep: UpkeepPlan | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Commit what arrives on ``inbox`` until it closes and is empty.

    ``on_commit`` is called after each COMMIT that stored something, before the replies; it
    must not block (it wakes the hub's tail, which reads the new rows from the store). After a
    failed transaction, while no request comes, the writer probes the store every
    ``probe_seconds``, so that health comes back by itself once the store can take writes again
    (disk space freed, remounted writable). With a size limit (``upkeep.retention``), a full
    disk is first met by deleting the oldest events (a reclaiming upkeep step) before probing.
    """
    incidents = Incidents() if incidents is None else incidents
    plan = UpkeepPlan() if upkeep is None else upkeep
    # Closed without a checkpoint: under a cancelled scope, ``aclose``'s would raise Cancelled in
    # place of the StoreBroken below, and a broken store would end the process as a clean stop.
    with inbox:
        monitor.update(running=True)
        task_status.started()
        pending: WriteRequest | None = None
        probe_bytes = 0
        more = True  # upkeep may have work: a store just opened may have deferred some
        try:
            while True:
                if pending is None and more:  # upkeep, unless a request is waiting
                    try:
                        pending = inbox.receive_nowait()
                    except trio.WouldBlock:
                        more = await _upkeep(store, plan, monitor, incidents)
                        continue
                    except trio.EndOfChannel:
                        return
                if pending is None:
                    failing = monitor.statistics().last_error
                    wait = probe_seconds if failing else plan.idle_seconds
                    with trio.move_on_after(wait):
                        try:
                            pending = await inbox.receive()
                        except trio.EndOfChannel:
                            return
                    if pending is None and failing:
                        if _reclaims(plan, monitor):
                            await _upkeep(store, plan, monitor, incidents, reclaim=True)
                        await _probe(store, monitor, probe_bytes, incidents)
                    elif pending is None:
                        more = await _upkeep(store, plan, monitor, incidents)
                    continue
                batch, pending = _take_batch(pending, inbox, max_txn_events)
                if await _commit(batch, store, monitor, on_commit, incidents):
                    more = await _upkeep(store, plan, monitor, incidents)
                else:
                    probe_bytes = _probe_size(batch)
                    if _reclaims(plan, monitor):  # make room before the next request comes
                        await _upkeep(store, plan, monitor, incidents, reclaim=True)
        except StoreBroken as exc:
            if isinstance(exc, StoreDamaged):  # it says what it is, and what to do
                LOGGER.critical("%s; stopping", exc)
                monitor.update(last_error=str(exc))
            else:
                LOGGER.critical("the store's connection is in an unknown state: %s; stopping", exc)
                monitor.update(last_error=f"the store's connection is broken: {exc}")
            if on_broken is not None:
                on_broken()
            refusal = _refusal(exc)
            if pending is not None:
                _reply(pending, refusal)
            try:
                async for request in inbox:
                    _reply(request, refusal)
            except trio.Cancelled:
                # Stopped at once (a second signal): still as a broken store, so that the
                # process exits non-zero and a supervisor restarts it, not as a clean stop.
                raise exc from None
            raise
        finally:
            monitor.update(running=False)


async def _upkeep(
    store: WriteStore,
    plan: UpkeepPlan,
    monitor: WriterMonitor,
    incidents: Incidents,
    *,
    reclaim: bool = False,
) -> bool:
    """One upkeep step, counted; whether another has work to do now."""
    with monitor.busy():
        result = await upkeep_step(store, plan, incidents, reclaim=reclaim)
    stats = monitor.statistics()
    monitor.update(
        upkeep_steps=stats.upkeep_steps + 1,
        upkeep_more=result.more,
        expired=stats.expired + result.expired,
    )
    return result.more


def _reclaims(plan: UpkeepPlan, monitor: WriterMonitor) -> bool:
    """Whether to delete the oldest events to make room: a size limit is set, and the disk (or
    the file's size limit) filled up below it."""
    error = monitor.statistics().last_error
    return plan.retention.max_bytes > 0 and error is not None and disk_full(error)


def _refusal(exc: StoreBroken) -> Unavailable:
    return Unavailable(f"the server is stopping after a store failure: {exc}")


def _probe_size(batch: list[WriteRequest]) -> int:
    size = sum(len(field) for r in batch for record in r.events for field in record)
    return min(max(2 * size, MIN_PROBE_BYTES), MAX_PROBE_BYTES)


async def _probe(
    store: WriteStore, monitor: WriterMonitor, probe_bytes: int, incidents: Incidents
) -> None:
    """One write that must fit for the store to count as healthy again; clears ``last_error``."""
    try:
        with monitor.busy():
            await trio.to_thread.run_sync(store.probe, probe_bytes)
    except StoreUnavailable as exc:
        LOGGER.debug("probe of %d bytes failed: %s", probe_bytes, exc)
        monitor.update(last_error=str(exc))
        return
    except StoreBroken:
        raise
    except Exception as exc:  # a bug in the probe: the store stays unhealthy, the writer runs
        incidents.record("writer", exc, f"probing the store with {probe_bytes} bytes")
        return
    LOGGER.warning("the store takes writes again (a %d-byte probe committed)", probe_bytes)
    monitor.update(last_error=None)


async def _commit(
    batch: list[WriteRequest],
    store: WriteStore,
    monitor: WriterMonitor,
    on_commit: Callable[[], None] | None,
    incidents: Incidents,
) -> bool:
    """Commit ``batch`` and answer each request; False when the store failed."""
    stats = monitor.statistics()
    events = sum(len(r.events) for r in batch)
    try:
        with monitor.busy():
            # Not cancellable: once the thread runs, we wait for COMMIT or ROLLBACK to finish.
            result = await trio.to_thread.run_sync(store.commit, [r.events for r in batch])
    except StoreUnavailable as exc:
        monitor.update(failed_transactions=stats.failed_transactions + 1, last_error=str(exc))
        if isinstance(exc, StoreContention) and len(batch) > 1:
            # A lock on one request's key must not fail the others merged with it. Only this
            # kind is retried alone: a store-wide failure (disk full, a table lock) would just
            # fail each request again, one wait after another.
            LOGGER.warning(
                "transaction of %d requests met a lock (%s); retrying each", len(batch), exc
            )
            return await _commit_each(batch, store, monitor, on_commit, incidents)
        LOGGER.error("transaction of %d requests failed, rolled back: %s", len(batch), exc)
        for request in batch:
            _reply(request, Unavailable(str(exc), stored_nothing=not exc.maybe_stored))
        return False
    except StoreBroken as exc:
        for request in batch:
            _reply(request, Unavailable(str(exc), stored_nothing=False))
        raise
    except Exception as exc:
        monitor.update(failed_transactions=stats.failed_transactions + 1)
        if len(batch) > 1:  # one request's bug must not fail the others merged with it
            return await _commit_each(batch, store, monitor, on_commit, incidents)
        request_id = incidents.record("writer", exc, f"committing {events} events")
        _reply(batch[0], Internal("writer", request_id))
        return True  # the store rolled back and takes writes: health is not affected
    monitor.update(
        transactions=stats.transactions + 1,
        requests=stats.requests + len(batch),
        events=stats.events + events,
        stored=stats.stored + result.stored,
        max_requests_per_transaction=max(stats.max_requests_per_transaction, len(batch)),
        last_error=None,
    )
    if on_commit is not None and result.stored:
        on_commit()
    for request, (stored, duplicates), flags in zip(
        batch, result.counts, result.stored_flags, strict=True
    ):
        _reply(request, Accepted(stored + duplicates, stored, duplicates, flags))
    return True


async def _commit_each(
    batch: list[WriteRequest],
    store: WriteStore,
    monitor: WriterMonitor,
    on_commit: Callable[[], None] | None,
    incidents: Incidents,
) -> bool:
    """Retry the requests of a failed group one by one. When one finds the connection broken,
    those not yet retried are refused too (their group rolled back): left unanswered, their
    workers would wait for ever, the writer's inbox would never close, and the process would
    never stop."""
    results = []
    for done, request in enumerate(batch):
        try:
            results.append(await _commit([request], store, monitor, on_commit, incidents))
        except StoreBroken as exc:
            for rest in batch[done + 1 :]:
                _reply(rest, _refusal(exc))
            raise
    return all(results)
