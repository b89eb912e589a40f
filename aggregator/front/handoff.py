"""The pair of sockets between the server and its read process (``aggregator/reads.py``).

A Unix ``SOCK_SEQPACKET`` pair: each message arrives whole, and the end of either process is
the end of the other's stream. A message is one byte of kind, then its payload; a connection
goes with its descriptor attached (``SCM_RIGHTS``: the receiver gets its own descriptor of the
same socket, and the sender then closes its own) and, as payload (``handed``), the requests it
has served so far, by either process, and the bytes already read from it, which the receiver
serves first.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import resource
import socket
import struct
from dataclasses import dataclass

import trio

LOGGER = logging.getLogger(__name__)
CONFIG = b"C"  # to the read process, first: the pickled Config and the server's start time
READY = b"R"  # from it: it serves
CONNECTION = b"N"  # either way: a connection, its requests served, the bytes read of it (handed)
TAKEN = b"T"  # from it: it took a connection (the server bounds those not yet taken)
RELEASED = b"L"  # from it: a connection it was handed has ended there (closed, handed back, lost)
OBSERVED = b"O"  # from it: a request it answered (method, path, seconds), for /metrics
DAMAGED = b"D"  # from it: a read met damage in the store (what, where): the server stops
INCIDENT = b"I"  # from it: the stage of an internal error it met (logged there), for /metrics
STOP = b"S"  # to it: finish the answers under way, close every connection, exit

# A connection's bytes read so far: at most one receive (64 KiB) past a request head, itself at
# most 16 KiB (hypercorn's h11_max_incomplete_size), after 4 bytes of count; the Config is a few
# KiB.
MAX_MESSAGE = 2**17
_SERVED = struct.Struct("!I")  # a CONNECTION's first bytes: the requests it has served
# Out of descriptors with no spare left, how often the receive of a connection handed back looks
# for a free one again (as the accept loop's retry).
SPARE_RETRY_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Message:
    kind: bytes
    payload: bytes
    connection: socket.socket | None  # the socket of a CONNECTION message, ours to close


def handed(served: int, data: bytes) -> bytes:
    """A CONNECTION message's payload: the requests the connection has served so far (counted
    by whichever process served each: hypercorn's ``keep_alive_max_requests`` bounds their sum),
    then the bytes read of it."""
    return _SERVED.pack(served) + data


def taken(payload: bytes) -> tuple[int, bytes]:
    """(requests served, bytes read) of a CONNECTION message's payload (``handed``)."""
    (served,) = _SERVED.unpack_from(payload)
    return served, payload[_SERVED.size :]


def pair() -> tuple[socket.socket, socket.socket]:
    """(the server's end, the read process's end: inherited by it)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.set_inheritable(True)
    return ours, theirs


def _attached(connection: int | None) -> list[tuple[int, int, array.array[int]]]:
    if connection is None:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [connection]))]


class Spare:
    """Descriptors held open (on /dev/null) for the connections the read process hands back: a
    process at its descriptor limit is passed a connection without it (the kernel closes it).
    The server's accept loop refills them before it takes a connection; each receive lends one.
    """

    def __init__(self, count: int) -> None:
        self._count = count
        self._held: list[int] = []

    def fit(self) -> None:
        """At most an eighth of the descriptors still free, so that under a tiny limit (a few
        dozen) the spares do not take what the server needs to accept any connection at all."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return
        try:
            used = len(os.listdir("/proc/self/fd"))
        except OSError:  # not Linux: counted as none used
            used = 0
        self._count = max(0, min(self._count, (soft - used) // 8))

    def refill(self) -> None:
        """Hold ``count`` again: ``OSError`` (EMFILE) while the process has none to spare."""
        while len(self._held) < self._count:
            self._held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))

    def ready(self) -> bool:
        """Whether a descriptor can be lent now: one is held (refilled first if it can be), or
        none is meant to be (a limit too small for any)."""
        with contextlib.suppress(OSError):  # EMFILE: none free yet
            self.refill()
        return bool(self._held) or self._count == 0

    def lend(self) -> None:
        """One free descriptor, for the receive that follows with no checkpoint between."""
        if self._held:
            os.close(self._held.pop())

    def close(self) -> None:
        while self._held:
            os.close(self._held.pop())


class End:
    """One end of the pair, used by one trio run."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._trio = trio.socket.from_stdlib_socket(sock)  # also makes ``sock`` non-blocking
        # One waiting send at a time: trio lets one task wait to write a socket, and a second
        # raised BusyResourceError (two connections' RELEASED with the queue full: that ended
        # the read process and every read it was answering).
        self._sending = trio.Lock()

    def send_now(self, kind: bytes, payload: bytes = b"", connection: int | None = None) -> bool:
        """Send without waiting: False if the other end cannot take it now (its queue is full)
        or is gone; the caller then keeps the connection."""
        try:
            self._sock.sendmsg([kind + payload], _attached(connection))
        except OSError:  # EAGAIN, EPIPE, ECONNRESET, EMSGSIZE: not sent
            return False
        return True

    async def send(self, kind: bytes, payload: bytes = b"", connection: int | None = None) -> None:
        """Send, waiting while the other end's queue is full; ``OSError`` if it is gone. Sends
        from several tasks go one after the other, in the order they came."""
        async with self._sending:
            await self._trio.sendmsg([kind + payload], _attached(connection))

    async def receive(self, spare: Spare | None = None) -> Message | None:
        """The next message; None once the other end is gone (its process ended). ``spare``
        lends a descriptor for a connection the message may carry."""
        space = socket.CMSG_SPACE(array.array("i").itemsize)
        try:
            if spare is None:
                data, ancillary, flags, _ = await self._trio.recvmsg(MAX_MESSAGE, space)
            else:
                data, ancillary, flags = await self._receive_lent(spare, space)
        except (ConnectionResetError, BrokenPipeError):
            return None
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        connections = [socket.socket(fileno=fd) for fd in fds]
        if data and not flags & socket.MSG_TRUNC and len(connections) < 2:
            if flags & socket.MSG_CTRUNC:
                # This process is at its descriptor limit (ulimit -n): the kernel closed the
                # connection instead of passing it. That client alone sees its connection end;
                # raising here ended the whole process (the server's, with every connection).
                for sock in connections:
                    sock.close()
                LOGGER.warning("a connection handed over was lost: at the descriptor limit")
                return Message(data[:1], data[1:], None)
            return Message(data[:1], data[1:], connections[0] if connections else None)
        for sock in connections:
            sock.close()
        if not data:
            return None
        # Cannot happen between these two ends: a bug, not a client's doing.
        raise OSError(f"a message over {MAX_MESSAGE} bytes or with several descriptors")

    async def _receive_lent(
        self, spare: Spare, space: int
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int]:
        # The descriptor freed and the receive with no checkpoint between: the accept loop,
        # which takes every descriptor that frees at the limit, cannot take it first.
        while True:
            await trio.lowlevel.wait_readable(self._sock)
            if not spare.ready() and self._connection_next():
                # No descriptor to lend: received now, the connection would be closed by the
                # kernel, unanswered (22 of 30 publishes handed back at once to a server at its
                # limit, with 8 spares). It waits in the pair's queue until one is free.
                await trio.sleep(SPARE_RETRY_SECONDS)
                continue
            spare.lend()
            try:
                data, ancillary, flags, _ = self._sock.recvmsg(MAX_MESSAGE, space)
            except BlockingIOError:
                continue
            finally:
                with contextlib.suppress(OSError):  # taken by the connection: refilled later
                    spare.refill()
            return data, ancillary, flags

    def _connection_next(self) -> bool:
        """Whether the next message is a connection (its kind peeked, nothing received)."""
        try:
            return self._sock.recv(1, socket.MSG_PEEK) == CONNECTION
        except OSError:  # none now, or the other end gone: the receive will say
            return False

    def close(self) -> None:
        self._trio.close()
