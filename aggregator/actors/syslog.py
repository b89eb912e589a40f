"""What the syslog listeners share: the backlog of one source, its committer, and the decoding of
a frame, counted.

Syslog has no acknowledgement, so the listeners batch instead of answering: each TCP connection
(and the UDP socket) has a ``Backlog`` of events read but not committed, and a committer that
takes *everything* waiting as one ``WriteRequest`` as soon as the previous one is committed. A
quiet stream is committed line by line as it arrives; a busy one makes batches of whatever
arrived during the last commit (up to ``max_events``), and the writer merges the batches of many
connections into one transaction. A full backlog (``max_events`` events or ``max_bytes`` bytes)
stops the TCP reader, so a fast peer is slowed by TCP itself; the UDP reader drops and counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from aggregator.decoders.syslog import decode_syslog
from aggregator.decoders.syslog_framing import Problem
from aggregator.incidents import Incidents
from aggregator.messages import (
    Accepted,
    EventRecord,
    Limits,
    Rejection,
    Unavailable,
    WriteOutcome,
    WriteRequest,
)

LOGGER = logging.getLogger(__name__)
TRANSPORTS = ("tcp", "udp")
# What became of each message: the metric's label values, fixed so they cannot grow.
RESULTS = ("stored", "duplicate", "malformed", "too_large", "truncated", "dropped")


def _ignore_count(transport: str, result: str, n: int) -> None:
    pass


def _ignore_delta(delta: int) -> None:
    pass


@dataclass(frozen=True, slots=True)
class SyslogDoor:
    """What the syslog listeners need from the Config, and where they report."""

    host: str
    limits: Limits  # max_payload_bytes bounds a message; max_batch_events a batch
    max_bytes: int  # of one source's backlog
    max_connections: int
    frame_seconds: float  # a frame begun must be complete within this long
    retry_seconds: float  # while the store cannot take writes
    grace_seconds: float  # at shutdown, to commit what was read
    incidents: Incidents = field(default_factory=Incidents)
    count: Callable[[str, str, int], None] = _ignore_count  # transport, result, messages
    connections: Callable[[int], None] = _ignore_delta  # +1 opened, -1 closed
    pending: Callable[[int], None] = _ignore_delta  # messages read and not yet committed


class Backlog:
    """Events read from one source and not yet committed; bounded in events and bytes."""

    def __init__(
        self, max_events: int, max_bytes: int, pending: Callable[[int], None] = _ignore_delta
    ) -> None:
        self._pending = pending  # told of every event added, and (by the committer) removed
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._records: list[EventRecord] = []
        self._bytes = 0
        self._closed = False
        self._room = trio.lowlevel.ParkingLot()  # readers waiting for room
        self._work = trio.lowlevel.ParkingLot()  # the committer waiting for events

    def full(self) -> bool:
        return len(self._records) >= self._max_events or self._bytes >= self._max_bytes

    def put_nowait(self, records: list[EventRecord], size: int) -> bool:
        """Add ``records`` (``size`` bytes as read) unless the backlog is full."""
        if self.full():
            return False
        self._add(records, size)
        return True

    async def put(self, records: list[EventRecord], size: int) -> None:
        """Add ``records``, first waiting while the backlog is full. Cancelled (shutdown), it
        adds them all the same: what was read is committed."""
        try:
            await trio.lowlevel.checkpoint()
            while self.full():
                await self._room.park()
        finally:
            self._add(records, size)

    def _add(self, records: list[EventRecord], size: int) -> None:
        self._pending(len(records))
        self._records += records
        self._bytes += size
        self._work.unpark_all()

    def close(self) -> None:
        """No more events: ``take`` returns what is left, then ``[]``."""
        self._closed = True
        self._work.unpark_all()

    async def take(self) -> list[EventRecord]:
        """Every waiting event; ``[]`` once closed and empty. (A batch can pass ``max_events``
        by the rest of the last chunk read: the limit is when the reader waits.)"""
        await trio.lowlevel.checkpoint()
        while not self._records and not self._closed:
            await self._work.park()
        return self.take_nowait()

    def take_nowait(self) -> list[EventRecord]:
        taken, self._records, self._bytes = self._records, [], 0
        self._room.unpark_all()
        return taken


def decode_frames(
    frames: Iterable[bytes | Problem], peer: str, transport: str, door: SyslogDoor
) -> list[EventRecord]:
    """The events of ``frames``; what is not one is counted (and logged at debug level: a
    hostile peer must not flood the log)."""
    received = datetime.now(UTC)
    records: list[EventRecord] = []
    for frame in frames:
        if isinstance(frame, Problem):
            door.count(transport, frame.value, 1)
            continue
        try:
            records.append(decode_syslog(frame, peer, received, door.limits))
        except Rejection as rejection:
            door.count(transport, rejection.error, 1)
            LOGGER.debug("syslog %s from %s dropped: %s", transport, peer, rejection.message)
        except Exception as exc:  # a decoder bug: this message alone is lost
            door.incidents.record("decode", exc, f"decoding a {len(frame)}-byte syslog message")
            door.count(transport, "dropped", 1)
    return records


async def run_committer(
    backlog: Backlog,
    writer: trio.MemorySendChannel[WriteRequest],
    transport: str,
    door: SyslogDoor,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Commit what ``backlog`` holds until it is closed and empty; then close ``writer``."""
    async with writer:
        task_status.started()
        try:
            while records := await backlog.take():
                try:
                    await _commit(records, writer, transport, door)
                finally:
                    door.pending(-len(records))
        except trio.Cancelled:  # shutdown's grace is over: what still waits is lost
            left = backlog.take_nowait()
            door.count(transport, "dropped", len(left))
            door.pending(-len(left))
            raise


async def _commit(
    records: list[EventRecord],
    writer: trio.MemorySendChannel[WriteRequest],
    transport: str,
    door: SyslogDoor,
) -> None:
    """Commit ``records``, retrying while the store cannot take writes (the backlog fills and
    the reader stops meanwhile); only a cancellation (shutdown's grace is over) gives up."""
    while True:
        reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](1)
        async with reply_recv:
            try:
                await writer.send(WriteRequest(records, reply_send))
            except trio.Cancelled:
                door.count(transport, "dropped", len(records))
                raise
            outcome = await reply_recv.receive()
        if isinstance(outcome, Accepted):
            door.count(transport, "stored", outcome.stored)
            door.count(transport, "duplicate", outcome.duplicates)
            return
        if isinstance(outcome, Unavailable):
            LOGGER.warning(
                "syslog: %d messages wait for the store (%s); retrying in %s s",
                len(records),
                outcome.reason,
                door.retry_seconds,
            )
            try:
                await trio.sleep(door.retry_seconds)
            except trio.Cancelled:
                door.count(transport, "dropped", len(records))
                raise
            continue
        # Internal: a bug met in this batch, logged by the writer. Alone, each message is
        # retried once, so only the one that meets the bug is lost.
        if len(records) == 1:
            door.count(transport, "dropped", 1)
            return
        for record in records:
            await _commit([record], writer, transport, door)
        return
