"""The read process, seen from the server: started with it, handed the connections that open
with a read, handing back the connections that go on with anything else.

Why a process: the publishers share the server's event loop, and a group commit wakes its
requests together, so a turn of the loop under load takes up to ~10 ms; an answer takes about
ten turns, plus a thread's hand-offs under a shared GIL. ``GET /events`` p99 during ingest was
~45 ms in the server's loop and ~7 ms in a process of its own (docs/benchmarks.md, "Reads in a
process of their own"). The read process (``aggregator/reads.py``) has its own readers of the
store and answers through the same app (routes, errors, tokens).

Which connections: those whose first bytes are a ``GET`` of ``READ_PATHS``. The read process
checks each whole request head; at the first request it does not serve (any other route, a
body, an upgrade, a head it cannot parse), it hands the connection back with the bytes it has
read, and the server serves it from then on. If the read process is not ready, or ends, the
server serves reads itself: nothing depends on it but speed.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import resource
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import trio

from aggregator.config import Config
from aggregator.front.handoff import (
    CONFIG,
    CONNECTION,
    DAMAGED,
    INCIDENT,
    OBSERVED,
    READY,
    RELEASED,
    STOP,
    TAKEN,
    End,
    Spare,
    handed,
    pair,
    taken,
)
from aggregator.store import StoreDamaged

LOGGER = logging.getLogger(__name__)
READ_PATHS = (b"/events", b"/stats", b"/topics")
# Connections handed over and not yet taken: a read process that stops taking them (stopped,
# hung) holds at most this many clients waiting; the server answers the others.
MAX_PENDING = 16
# Descriptors the read process keeps for itself beside its connections (the pair, its event loop,
# the store's files: each reader's database and WAL, the shared memory), and for each reader.
RESERVED_DESCRIPTORS = (24, 2)
# Descriptors the server holds for connections handed back to it (``Spare``): more than the
# read process hands back between two turns of the accept loop.
SPARE_DESCRIPTORS = 8
RESTART_SECONDS = (1.0, 60.0)  # the first pause before another read process, the longest
_STARTS = tuple(b"GET " + path + end for path in READ_PATHS for end in (b"?", b" "))


@dataclass(frozen=True, slots=True)
class Start:
    """What the read process is sent first."""

    config: Config
    started: float  # the server's start, time.monotonic() (one clock for all processes)


class Observed(msgspec.Struct, array_like=True):
    method: str
    path: str
    seconds: float


def opens_with_read(data: bytes | bytearray) -> bool:
    """Whether a connection whose first bytes are ``data`` goes to the read process."""
    return data.startswith(_STARTS)


class ReadSide:
    """Starts the read process (``run``) and hands it connections (``take``)."""

    def __init__(
        self,
        start: Start,
        observe: Callable[[str, str, float], None],
        count_incident: Callable[[str], None],
        on_damaged: Callable[[StoreDamaged], None] | None = None,
    ) -> None:
        """``observe`` and ``count_incident`` are told what the read process answered and the
        internal errors it met (the server's /metrics); ``on_damaged``, damage its reads met
        in the store (it stops the server, as a read of its own would)."""
        self._start = start
        self._observe = observe
        self._count_incident = count_incident
        self._on_damaged = on_damaged
        self._end: End | None = None
        self._ready = False
        self._pending = 0  # connections handed over that it has not said it took (TAKEN)
        self._held = 0  # connections handed over that have not ended there (RELEASED)
        self._max_held = 0  # what its descriptor limit leaves for connections (``_room``)
        self._stopped = trio.Event()
        self._ended = trio.Event()
        self._running = trio.CancelScope()
        self.spare = Spare(SPARE_DESCRIPTORS)  # refilled by the accept loop, lent by ``_serve``

    def take(self, sock: socket.socket, data: bytes, served: int) -> bool:
        """Hand over the connection ``sock`` whose first bytes read are ``data``, and which has
        served ``served`` requests, if it opens with a read and the read process is ready: True
        when handed, and the caller closes its descriptor (not the connection: the read process
        has its own)."""
        if not (self._ready and self._end is not None and opens_with_read(data)):
            return False
        if self._pending >= MAX_PENDING:
            return False  # it is not taking them (stopped, hung): the server answers meanwhile
        if self._held >= self._max_held:
            # At its descriptor limit the kernel closes a connection handed to it (every read
            # was lost, unanswered, while the server had descriptors to answer it).
            return False
        if not self._end.send_now(CONNECTION, handed(served, data), sock.fileno()):
            return False
        self._pending += 1
        self._held += 1
        return True

    async def run(
        self,
        adopt: Callable[[socket.socket, bytes, int], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep a read process running until ``stop``: one that ends unasked is started again,
        after a pause that doubles while they keep ending; meanwhile the server answers reads
        itself. ``adopt`` serves a connection it hands back (with the bytes read from it, and
        the requests it has served).
        Cancelled, it kills the process."""
        task_status.started()
        pause = RESTART_SECONDS[0]
        try:
            with self._running:
                while not self._stopped.is_set():
                    began = trio.current_time()
                    code = await self._run_one(adopt)
                    if self._stopped.is_set():
                        break
                    if trio.current_time() - began > RESTART_SECONDS[1]:
                        pause = RESTART_SECONDS[0]  # it had run a while: not a crash loop
                    LOGGER.error(
                        "the read process ended (%s): the server answers reads itself; another "
                        "starts in %.0f s",
                        code,
                        pause,
                    )
                    with trio.move_on_after(pause):
                        await self._stopped.wait()
                    pause = min(pause * 2, RESTART_SECONDS[1])
        finally:
            self.spare.close()
            self._ended.set()

    async def _run_one(self, adopt: Callable[[socket.socket, bytes, int], None]) -> str:
        """Start a read process and serve its messages until it ends; how it ended."""
        try:
            ours, theirs = pair()
        except OSError as exc:  # out of descriptors (EMFILE): raising here stopped the server
            return f"it could not start: {exc}"
        end = End(ours)
        self._max_held = _room(self._start.config.readers)  # the limit it inherits
        command = [sys.executable, "-m", "aggregator.reads", str(theirs.fileno())]
        try:
            process = await trio.lowlevel.open_process(command, pass_fds=(theirs.fileno(),))
        except OSError as exc:
            end.close()
            return f"it could not start: {exc}"
        finally:
            theirs.close()
        try:
            # It may be gone already (it died at start, before this task ran again): then the
            # sends fail, and _serve sees its end. Raising here stopped the server (exit 1).
            with contextlib.suppress(OSError):
                await end.send(CONFIG, pickle.dumps(self._start))
                self._end = end
                if self._stopped.is_set():  # stop came while it started: it saw no _end to tell
                    await end.send(STOP)
            await self._serve(end, adopt, process)
            return f"exit status {await process.wait()}"
        finally:
            self._ready = False
            self._end = None
            self._pending = 0
            self._held = 0
            end.close()
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()

    async def _serve(self, end: End, adopt: Callable[[socket.socket, bytes, int], None],
                     process: trio.Process) -> None:  # fmt: skip
        while (message := await end.receive(self.spare)) is not None:
            if message.kind == READY:
                self._ready = True
                LOGGER.info("reads are answered by the read process (pid %d)", process.pid)
            elif message.kind == TAKEN:
                self._pending -= 1
            elif message.kind == RELEASED:
                self._held -= 1
            elif message.kind == CONNECTION and message.connection is not None:
                served, data = taken(message.payload)
                adopt(message.connection, data, served)
            elif message.kind == OBSERVED:
                seen = msgspec.json.decode(message.payload, type=Observed)
                self._observe(seen.method, seen.path, seen.seconds)
            elif message.kind == INCIDENT:
                self._count_incident(message.payload.decode())
            elif message.kind == DAMAGED and self._on_damaged is not None:
                detail, where = msgspec.json.decode(message.payload, type=tuple[str, str])
                self._on_damaged(StoreDamaged(detail, where))

    def kill(self) -> None:
        """End the read process now (``run`` kills it and returns)."""
        self._running.cancel()

    async def stop(self) -> None:
        """No more connections to it; it finishes the answers under way, closes its
        connections and exits. Returns once it has."""
        self._ready = False
        self._stopped.set()
        if self._end is not None:
            with contextlib.suppress(OSError):  # it has ended already
                await self._end.send(STOP)
        await self._ended.wait()


def _room(readers: int) -> int:
    """Connections the read process may hold: its open-files limit (this process's, which it
    inherits) less what it needs for itself (``RESERVED_DESCRIPTORS``)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return MAX_PENDING * 2**16  # no limit: never the bound
    fixed, per_reader = RESERVED_DESCRIPTORS
    return max(soft - fixed - per_reader * readers, 0)
