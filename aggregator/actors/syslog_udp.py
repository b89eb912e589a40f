"""The syslog UDP listener: one message per datagram (RFC 5426), best effort.

The reader never waits for the store: while the backlog is full (the writer is slower than the
senders, or the store cannot take writes) datagrams are read and dropped, and counted, rather
than left to overflow the kernel's buffer unseen. What was read before shutdown is committed
within the grace period.
"""

from __future__ import annotations

import logging

import trio

from aggregator.actors.syslog import Backlog, SyslogDoor, decode_frames, run_committer
from aggregator.decoders.syslog_framing import Problem, strip_frame
from aggregator.messages import WriteRequest

LOGGER = logging.getLogger(__name__)
MAX_DATAGRAM = 65535


async def serve_syslog_udp(
    port: int,
    writer: trio.MemorySendChannel[WriteRequest],
    shutdown: trio.Event,
    door: SyslogDoor,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Receive on ``door.host:port`` until ``shutdown``; reports the bound port."""
    family, kind, proto, _, address = (
        await trio.socket.getaddrinfo(door.host, port, type=trio.socket.SOCK_DGRAM)
    )[0]
    backlog = Backlog(door.limits.max_batch_events, door.max_bytes, door.pending)
    with trio.socket.socket(family, kind, proto) as sock:
        await sock.bind(address)
        bound = sock.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(run_committer, backlog, writer, "udp", door)
            with trio.CancelScope() as reading:
                nursery.start_soon(_cancel_on, shutdown, reading)
                LOGGER.info("syslog listening on udp://%s:%d", door.host, bound)
                task_status.started(bound)
                await _receive(sock, backlog, door)
            backlog.close()
            nursery.cancel_scope.deadline = trio.current_time() + door.grace_seconds


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _receive(sock: trio.socket.SocketType, backlog: Backlog, door: SyslogDoor) -> None:
    limit = door.limits.max_payload_bytes
    while True:
        data, address = await sock.recvfrom(MAX_DATAGRAM)
        frame = strip_frame(data)
        if not frame.strip(b"\r\n\x00"):
            continue
        if backlog.full():  # dropped anyway: not worth decoding (a flood costs reads only)
            door.count("udp", "dropped", 1)
            continue
        frames: list[bytes | Problem] = [frame if len(frame) <= limit else Problem.TOO_LARGE]
        records = decode_frames(frames, str(address[0]), "udp", door)
        if records and not backlog.put_nowait(records, len(data)):
            door.count("udp", "dropped", len(records))
