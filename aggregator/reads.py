"""``python -m aggregator.reads FD``: the read process (``aggregator/front/readside.py``).

Started by the server, with its end of the hand-off pair as descriptor FD; not a command to run
by hand. It answers ``GET`` of ``READ_PATHS`` on the connections the server hands it, through
the server's own app (``build_app``: the same routes, errors and tokens) with readers of its own.
A connection whose next request is anything else goes back to the server with the bytes read
from it. It stops when the server says so (after the answers under way, within the grace), and
at once when the server is gone.

Only ``GET`` requests without a body are served here, so HTTP/1.1 takes few lines: a head is
read to its end (``HEAD_LIMIT``), checked by h11, answered, and the next one read. The limits of
the server's connections hold: the keep-alive timeout from the end of an answer to the end of
the next head, the send timeout (``PeerStream``), a close only once the answers were delivered,
and hypercorn's ``keep_alive_max_requests``, counted over the connection's requests in both
processes (the count goes with it each way). A client that ends its stream inside a head goes
back to the server, whose h11 answers it (400) as it answers any such client.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import pickle
import platform
import re
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import unquote

import h11
import msgspec
import trio

from aggregator.actors.hub import Hub
from aggregator.actors.monitor import WriterMonitor
from aggregator.actors.readers import ReaderPool, open_reader_pool
from aggregator.config import Config
from aggregator.front.app import Front
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
    handed,
    taken,
)
from aggregator.front.metrics import Metrics
from aggregator.front.readside import READ_PATHS, Observed, Start
from aggregator.front.server import PeerStream, drop_limit
from aggregator.incidents import Incidents
from aggregator.messages import Submission
from aggregator.service import _hypercorn_config, build_app
from aggregator.store import StoreDamaged, open_reader

LOGGER = logging.getLogger("aggregator.reads")
HEAD_LIMIT = 16 * 1024  # hypercorn's h11_max_incomplete_size: a longer head is the server's 431
_HEAD_END = re.compile(rb"\n\r?\n")  # h11 takes bare LF line ends too
_RECEIVE_BYTES = 2**16
SLICE_NS = 300_000  # 0.3 ms; Linux's default is 0.75 ms times 1 + log2(cores), 1.4 ms on 2
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}  # the system call's number


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    # The server decides when this process stops: a terminal's Ctrl-C, or a supervisor's
    # SIGTERM to every process of the group, would end it before the answers under way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    refused = ask_for_short_slices()  # before any thread starts: threads inherit it
    trio.run(_run, socket.socket(fileno=int(args[0])), refused)


def ask_for_short_slices() -> str | None:
    """Ask Linux for time slices of ``SLICE_NS`` for this process. Since Linux 6.12 (EEVDF) a
    task with a shorter slice than the others' is run sooner when it wakes: a read waits less
    for a core that ingest keeps busy (docs/benchmarks.md). Unprivileged; the share of the CPU
    stays as it was; older kernels accept and ignore it. None, or why it was not done."""
    number = _SCHED_SETATTR.get(platform.machine())
    bits = struct.calcsize("P") * 8  # a 32-bit Python on a 64-bit kernel numbers calls otherwise
    if number is None or bits != 64:
        return f"no sched_setattr number known for {platform.machine()} ({bits}-bit)"
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        return "the process runs under another scheduling policy (chrt), left as it is"
    nice = os.getpriority(os.PRIO_PROCESS, 0)  # kept: sched_setattr sets it too
    # struct sched_attr (sched_setattr(2)): size, policy, flags, nice, priority, runtime, ...
    attr = struct.pack("=IIQiIQQQ", 48, os.SCHED_OTHER, 0, nice, 0, SLICE_NS, 0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, 0, attr, 0) != 0:
        return os.strerror(ctypes.get_errno())
    return None


async def _run(sock: socket.socket, refused: str | None) -> None:
    end = End(sock)
    message = await end.receive()
    if message is None or message.kind != CONFIG:
        return  # the server is gone
    start: Start = pickle.loads(message.payload)  # our own server's message
    config = start.config
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    gc.freeze()  # as the server's (aggregator/__main__.py)
    if refused is not None:
        LOGGER.info("short time slices not taken (%s): reads may wait longer for a core", refused)
    incidents = Incidents(partial(_incident, end))
    opener = partial(open_reader, config)
    try:
        async with open_reader_pool(opener, config.readers, partial(_damaged, end)) as readers:
            front = _front(config, readers, start.started, incidents)
            # Its receive tells no disconnect before the answer: nothing for the routes to watch.
            app, _ = build_app(front, config, partial(_observed, end), disconnects=False)
            await ReadServer(app, config, end, incidents).serve()
    except StoreDamaged as exc:
        # Met opening the readers (each reads the file's first page at once): untold, this
        # process failed to start again and again while the server wrote on to the store.
        with contextlib.suppress(OSError):
            await end.send(DAMAGED, msgspec.json.encode((exc.detail, exc.where)))
        raise


def _front(config: Config, readers: ReaderPool, started: float, incidents: Incidents) -> Front:
    """The routes' ``Front``: only its readers and limits are used by the read routes; the
    ingest channel is closed, the hub empty."""
    ingest, closed = trio.open_memory_channel[Submission](0)
    closed.close()
    return Front(
        ingest,
        readers,
        WriterMonitor(config.stall_seconds),
        config.max_body_bytes,
        config.queue_size,
        started,
        Hub(buffer_events=1, buffer_bytes=1),
        Metrics(),
        config.heartbeat_seconds,
        config.max_subscribers,
        incidents,
        max_offset=config.max_offset,
    )


def _observed(end: End, method: str, path: str, seconds: float) -> None:
    # For the server's /metrics; if its queue is full, this one is not counted.
    end.send_now(OBSERVED, msgspec.json.encode(Observed(method, path, seconds)))


def _damaged(end: End, exc: StoreDamaged) -> None:
    # The server stops on it, as on damage its own reads meet; the client's answer says so.
    _tell(end, DAMAGED, msgspec.json.encode((exc.detail, exc.where)))


def _incident(end: End, stage: str) -> None:
    _tell(end, INCIDENT, stage.encode())  # logged here; counted in the server's /metrics


def _tell(end: End, kind: bytes, payload: bytes) -> None:
    """Send now, or once the pair's queue has room: sent only if there was room, a DAMAGED
    was lost, and the server wrote on to the damaged store until damage met it too."""
    if not end.send_now(kind, payload):
        trio.lowlevel.spawn_system_task(_send_later, end, kind, payload)


async def _send_later(end: End, kind: bytes, payload: bytes) -> None:
    with contextlib.suppress(OSError, trio.ClosedResourceError):  # the server is gone
        await end.send(kind, payload)


class ReadServer:
    """Serves the connections handed over ``end`` until the server says stop or is gone."""

    def __init__(self, app: Any, config: Config, end: End, incidents: Incidents) -> None:
        self._app = app
        self._config = config
        self._hypercorn = _hypercorn_config(config)
        self._end = end
        self._incidents = incidents
        self._waiting: set[trio.CancelScope] = set()  # connections between requests
        self._stopping = False

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            await self._end.send(READY)
            while (message := await self._end.receive()) is not None:
                if message.kind == CONNECTION:
                    await self._end.send(TAKEN)  # even one lost on the way (descriptor limit)
                    if message.connection is None:
                        await self._release()
                    else:
                        served, data = taken(message.payload)
                        nursery.start_soon(self._serve_connection, message.connection, data, served)
                elif message.kind == STOP:
                    # Connections between requests close now; the others after their answer,
                    # within the grace.
                    self._stopping = True
                    for waiting in self._waiting:
                        waiting.cancel()
                    nursery.cancel_scope.deadline = (
                        trio.current_time() + self._config.shutdown_grace_seconds
                    )
                    return
            nursery.cancel_scope.cancel()  # the server is gone: so are its clients' answers

    async def _serve_connection(self, sock: socket.socket, data: bytes, served: int) -> None:
        """Serve the connection ``sock``, from ``data`` read of it already, after the ``served``
        requests it had."""
        stream = PeerStream(
            trio.SocketStream(trio.socket.from_stdlib_socket(sock)),
            self._config.send_timeout_seconds,
        )
        rest: tuple[int, bytes] | None = None
        try:
            rest = await self._serve_requests(stream, bytearray(data), served)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client is gone
        except Exception as exc:  # a bug: this connection alone ends
            self._incidents.record("connection", exc, "serving a connection in the read process")
        try:
            if rest is not None and not self._stopping:
                with contextlib.suppress(OSError):  # the server is gone: closed below
                    await self._end.send(CONNECTION, handed(*rest), sock.fileno())
                    return
            await self._close(stream)
        finally:
            stream.abort()  # this process's descriptor; a connection handed back stays open
            await self._release()

    async def _release(self) -> None:
        """Tell the server a connection it handed over has ended here: it bounds those this
        process holds by its descriptor limit (``ReadSide.take``)."""
        if not self._end.send_now(RELEASED):
            with contextlib.suppress(OSError):  # the server is gone
                await self._end.send(RELEASED)

    async def _serve_requests(
        self, stream: PeerStream, buffer: bytearray, served: int = 0
    ) -> tuple[int, bytes] | None:
        """Answer the requests of one connection, which had served ``served`` before, until it
        ends (None), or its next request is not one this process answers: then the bytes read
        of it and its requests served so far, for the server (as ``handed`` takes them)."""
        while True:
            deadline = trio.current_time() + self._config.keep_alive_seconds
            while (found := _HEAD_END.search(buffer, 0, HEAD_LIMIT)) is None:
                if len(buffer) >= HEAD_LIMIT:
                    return served, bytes(buffer)  # the server refuses it (431)
                if self._stopping:
                    return None
                # One scope per receive (a scope is entered once): a head in three packets or
                # more raised RuntimeError, and its connection was closed unanswered.
                idle = trio.CancelScope(deadline=deadline)
                self._waiting.add(idle)
                try:
                    with idle:
                        data = await stream.receive_some(_RECEIVE_BYTES)
                finally:
                    self._waiting.discard(idle)
                if idle.cancelled_caught:
                    return None  # the keep-alive timeout (as hypercorn's: no answer), a stop
                if not data:
                    # The client closed, or half-closed: between two requests, the connection
                    # ends. Inside a head, the server's h11 meets that end of the stream itself
                    # (its recv sees it again) and answers 400 as to any client.
                    return (served, bytes(buffer)) if buffer else None
                buffer += data
            parsed = _servable(bytes(buffer[: found.end()]))
            if parsed is None:
                return served, bytes(buffer)
            del buffer[: found.end()]
            served += 1  # as hypercorn counts: each request it passes to the app
            last = served >= self._hypercorn.keep_alive_max_requests
            if not await self._answer(stream, *parsed, last=last) or self._stopping:
                return None

    async def _answer(
        self, stream: PeerStream, connection: h11.Connection, request: h11.Request, *, last: bool
    ) -> bool:
        """Answer ``request`` through the app; whether the connection may take another.
        ``last``: the connection's last request (``keep_alive_max_requests``): its answer says
        ``Connection: close``, as hypercorn's, and the connection closes after it."""
        path, _, query = request.target.partition(b"?")
        try:
            client, server = stream.socket.getpeername()[:2], stream.socket.getsockname()[:2]
        except OSError:
            return False  # the client is gone
        scope = {
            "type": "http",
            "http_version": request.http_version.decode(),
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "method": request.method.decode(),
            "scheme": "http",
            "path": unquote(path.decode("ascii")),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": list(request.headers),
            "client": tuple(client),
            "server": tuple(server),
            "state": {},
            "extensions": {},
        }
        answered = trio.Event()
        head: list[bytes] = []
        given = False

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:  # the whole body, empty
                given = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *self._hypercorn.response_headers("h11")]
                if last:
                    headers.append((b"connection", b"close"))
                head.append(connection.send(h11.Response(status_code=message["status"],
                                                         headers=headers)))  # fmt: skip
                return
            if message["type"] != "http.response.body" or answered.is_set():
                return
            data = b"".join(head)
            head.clear()
            body = message.get("body", b"")
            if body:
                data += connection.send(h11.Data(data=body))
            if not message.get("more_body", False):
                data += connection.send(h11.EndOfMessage())
                answered.set()
            await stream.send_all(data)

        await self._app(scope, receive, send)
        return answered.is_set() and connection.our_state is h11.DONE

    async def _close(self, stream: PeerStream) -> None:
        """As the server's: half-close, then close once what was sent was delivered, reading
        and dropping what the client sends meanwhile (``drop_limit`` at most)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_eof()
        async with trio.open_nursery() as nursery:
            limit = drop_limit(HEAD_LIMIT, self._config.max_body_bytes)
            nursery.start_soon(_drop, stream, limit, nursery.cancel_scope)
            await stream.wait_delivered()
            nursery.cancel_scope.cancel()


async def _drop(stream: PeerStream, limit: int, done: trio.CancelScope) -> None:
    dropped = 0
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while dropped <= limit:
            data = await stream.receive_some(_RECEIVE_BYTES)
            if not data:
                return
            dropped += len(data)
    stream.abort()  # more than an honest client sends: a reset, at once (as the server's)
    done.cancel()


def _servable(head: bytes) -> tuple[h11.Connection, h11.Request] | None:
    """``head`` parsed, if it is a request this process answers: a ``GET`` of ``READ_PATHS``
    with no body and no upgrade. Anything else, a head h11 refuses included, is the server's."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    try:
        connection.receive_data(head)
        request = connection.next_event()
        if not isinstance(request, h11.Request) or not isinstance(
            connection.next_event(), h11.EndOfMessage
        ):
            return None
    except h11.RemoteProtocolError:
        return None
    path = request.target.partition(b"?")[0]
    if request.method != b"GET" or path not in READ_PATHS:
        return None
    if any(name in (b"upgrade", b"expect") for name, _ in request.headers):
        return None
    return connection, request


if __name__ == "__main__":
    main()
