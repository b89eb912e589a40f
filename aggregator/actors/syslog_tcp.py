"""The syslog TCP listener: RFC 6587 octet counting and newline framing, detected per message.

One task per connection reads, frames and decodes; its committer (``syslog.py``) commits what was
read. What it promises (docs/syslog.md): a message is stored at most once, and when the sender
closes the connection, everything it sent is committed *before* the aggregator closes its side
(a FIN); every other end of the connection, the process's death included, is a reset.

Hostile or broken peers cost little: at most ``max_connections`` are served (beyond that the
listener stops accepting and the kernel's backlog holds the rest); a frame begun must be complete
within ``frame_seconds`` (a peer that stalls mid-frame is cut); a frame over the size limit is
skipped unbuffered; garbage is counted as malformed and the next frame is read as usual.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import resource
import socket
import struct
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from aggregator.actors.syslog import Backlog, SyslogDoor, decode_frames, run_committer
from aggregator.decoders.syslog_framing import Framer
from aggregator.messages import WriteRequest

LOGGER = logging.getLogger(__name__)
CHUNK = 65536
# A peer that vanishes without a FIN (its host died, a cable) is found by TCP keepalive.
KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6))
# accept(2) failing for want of file descriptors or memory: the peer stays in the kernel's
# queue, so wait and retry (trio's serve_listeners does the same) instead of ending the listener
# and, with it, the server.
EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
EXHAUSTED_RETRY_SECONDS = 0.1
# Descriptors left for the rest of the server (store files, readers, HTTP connections): idle
# syslog peers must never starve /health or the store. A server at rest holds about 30.
RESERVED_DESCRIPTORS = 128


async def serve_syslog_tcp(
    port: int,
    writer: trio.MemorySendChannel[WriteRequest],
    shutdown: trio.Event,
    door: SyslogDoor,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``door.host:port`` until ``shutdown``; reports the bound port. Then stop
    accepting and reading, commit what was read (within the grace period) and return."""
    listeners = await trio.open_tcp_listeners(port, host=door.host)
    bound = listeners[0].socket.getsockname()[1]
    max_connections = connection_limit(door.max_connections)
    slots = trio.Semaphore(max_connections)
    reading: set[trio.CancelScope] = set()
    async with writer, trio.open_nursery() as connections:
        serve = partial(_serve_connection, writer=writer, slots=slots, reading=reading, door=door)
        async with trio.open_nursery() as accepting:
            for listener in listeners:
                accepting.start_soon(_accept, listener, connections, slots, serve, max_connections)
            LOGGER.info("syslog listening on tcp://%s:%d", door.host, bound)
            task_status.started(bound)
            await shutdown.wait()
            accepting.cancel_scope.cancel()
        for listener in listeners:
            await listener.aclose()
        for scope in reading:
            scope.cancel()
        connections.cancel_scope.deadline = trio.current_time() + door.grace_seconds


def connection_limit(wanted: int) -> int:
    """``wanted`` connections if the open-files limit leaves ``RESERVED_DESCRIPTORS`` beside
    them (raising the soft limit toward the hard one if need be, as Go's runtime does); else as
    many as it leaves (at least a quarter of it), and a warning."""
    needed = wanted + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if raised > soft:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft >= needed:
        return wanted
    limit = max(soft - RESERVED_DESCRIPTORS, soft // 4, 1)
    LOGGER.warning(
        "syslog tcp: serving at most %d connections, not %d (AGGREGATOR_SYSLOG_MAX_CONNECTIONS): "
        "the open-files limit is %d and %d are kept for the rest of the server; raise it "
        "(ulimit -n %d) or lower the setting",
        limit,
        wanted,
        soft,
        RESERVED_DESCRIPTORS,
        needed,
    )
    return limit


async def _accept(
    listener: trio.SocketListener,
    connections: trio.Nursery,
    slots: trio.Semaphore,
    serve: Callable[[trio.SocketStream], Awaitable[None]],
    max_connections: int,
) -> None:
    exhausted = False  # logged once per episode, not at every retry
    while True:
        await slots.acquire()  # a free slot first: beyond max_connections, peers wait
        try:
            stream = await listener.accept()
        except OSError as exc:
            slots.release()
            if exc.errno not in EXHAUSTED:
                raise
            if not exhausted:
                LOGGER.warning(
                    "syslog tcp: cannot accept a connection (%s); new peers wait until "
                    "descriptors free up. Lower AGGREGATOR_SYSLOG_MAX_CONNECTIONS (%d now) or "
                    "raise the open-files limit (ulimit -n %s)",
                    os.strerror(exc.errno or 0),
                    max_connections,
                    _open_files_limit(),
                )
                exhausted = True
            await trio.sleep(EXHAUSTED_RETRY_SECONDS)
            continue
        except BaseException:
            slots.release()
            raise
        if exhausted:
            LOGGER.info("syslog tcp: accepting connections again")
            exhausted = False
        connections.start_soon(serve, stream)


async def _serve_connection(
    stream: trio.SocketStream,
    *,
    writer: trio.MemorySendChannel[WriteRequest],
    slots: trio.Semaphore,
    reading: set[trio.CancelScope],
    door: SyslogDoor,
) -> None:
    door.connections(1)
    try:
        peer = str(stream.socket.getpeername()[0])
    except OSError:  # already gone
        peer = "unknown"
    _keepalive(stream)
    # Until everything read is committed, any close is a reset, not a FIN: also the one the
    # kernel makes when the process dies (kill -9, OOM, a crash), which a sender waiting for
    # our close would otherwise take for "stored".
    _reset_on_close(stream, True)
    backlog = Backlog(door.limits.max_batch_events, door.max_bytes, door.pending)
    framer = Framer(door.limits.max_payload_bytes)
    scope = trio.CancelScope()
    reading.add(scope)
    try:
        async with stream:
            async with trio.open_nursery() as nursery:
                await nursery.start(run_committer, backlog, writer.clone(), "tcp", door)
                try:
                    with scope:
                        await _read(stream, framer, backlog, peer, door)
                finally:
                    backlog.close()  # the committer commits what is left, then we close
            # Committed: now a FIN, unless a frame was cut (the peer stalled, or closed, inside
            # it; shutdown): a sender waiting for our close must not take that frame for stored.
            # (Shutdown's grace over, or an error, leaves the reset too.)
            _reset_on_close(stream, framer.truncated)
    finally:
        reading.discard(scope)
        slots.release()
        door.connections(-1)


async def _read(
    stream: trio.SocketStream, framer: Framer, backlog: Backlog, peer: str, door: SyslogDoor
) -> None:
    """Read frames until the peer closes, resets, or stalls inside a frame."""
    # When the frame now partly read began. Time spent waiting for room in the backlog is not
    # counted against the peer: it cannot send while we do not read.
    begun = math.inf
    try:
        while True:
            with trio.move_on_at(begun + door.frame_seconds) as timer:
                data = await stream.receive_some(CHUNK)
            if timer.cancelled_caught:
                LOGGER.debug("syslog tcp: %s stalled inside a frame; closing", peer)
                _count_cut(framer, door)
                return
            arrived = trio.current_time()
            records = decode_frames(framer.feed(data) if data else framer.end(), peer, "tcp", door)
            if records:
                await backlog.put(records, len(data))
            if not data:
                return
            now = trio.current_time()
            if not framer.partial:
                begun = math.inf
            elif begun == math.inf:
                begun = now
            else:
                begun += now - arrived
    except trio.BrokenResourceError:  # a reset: what was not a whole frame is lost
        _count_cut(framer, door)
    except trio.Cancelled:  # shutdown: stop reading; what was read is committed
        _count_cut(framer, door)
        raise


def _count_cut(framer: Framer, door: SyslogDoor) -> None:
    for problem in framer.cut():
        door.count("tcp", problem.value, 1)


def _reset_on_close(stream: trio.SocketStream, reset: bool) -> None:
    """SO_LINGER with a zero timeout: closing the socket sends a reset (RST), not a FIN."""
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", int(reset), 0))


def _open_files_limit() -> str:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def _keepalive(stream: trio.SocketStream) -> None:
    try:
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE:
            if hasattr(socket, name):
                stream.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:  # the peer is already gone; reading will say so
        pass
