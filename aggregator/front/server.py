"""The HTTP server: hypercorn's HTTP/1.1 protocol on each connection, under this module's own
accept loop.

``hypercorn.trio.serve`` runs every connection as a task of one server nursery, so an exception
its protocol code raises outside any request (an ``Upgrade: h2c`` with a settings header that is
not base64, a client that breaks its chunked framing just as the server closes the connection)
ended that nursery, and the whole server with it. Here each connection runs hypercorn's
``TCPServer`` inside a guard: what it raises is logged once as an incident (stage
``connection``), that connection alone is closed, and the server goes on.

Each connection's stream also bounds how long a send may wait for the peer to take any data
(``AGGREGATOR_SEND_TIMEOUT_SECONDS``): hypercorn sends shielded from cancellation, so a client
that stops reading (a stalled ``/subscribe``) used to hold its task, its memory and the server's
shutdown for ever. And at the end of shutdown ``abort`` closes every connection still open, which
ends even a send under way at once.

A request h11 cannot take (a head it cannot parse, conflicting ``Content-Length``, no ``Host``, a
head over hypercorn's 16 KiB, a ``Transfer-Encoding`` other than chunked) is refused by hypercorn
before any route, with an empty 400/431/501: here that answer carries a JSON body that names what
is wrong (h11's reason) and the limit, like every other rejection.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import socket
import struct
import termios
from collections.abc import Callable
from functools import partial
from math import inf
from typing import Any

import h11
import hypercorn.config
import msgspec
import trio
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from aggregator.front.handoff import Spare
from aggregator.front.readside import ReadSide, opens_with_read
from aggregator.front.responses import ErrorBody
from aggregator.incidents import Incidents

LOGGER = logging.getLogger(__name__)
_RECEIVE_BYTES = 2**16  # hypercorn's MAX_RECV
# Linux: the bytes of a TCP socket's send queue its peer has not acknowledged yet (SIOCOUTQ).
_UNACKNOWLEDGED = getattr(termios, "TIOCOUTQ", None)
_TCP_INFO = getattr(socket, "TCP_INFO", 11)  # its first byte: the connection's state
_TCP_CLOSE = 7  # Linux's TCP_CLOSE: reset, or closed
_DELIVERY_POLL_SECONDS = (0.001, 0.05)  # the first pause, the longest


class PeerStream(trio.abc.HalfCloseableStream):
    """A connection's socket stream whose sends give up after ``send_timeout`` seconds, and that
    ``abort`` closes under any task using it."""

    def __init__(self, inner: trio.SocketStream, send_timeout: float) -> None:
        self._inner = inner
        self._send_timeout = send_timeout

    @property
    def socket(self) -> Any:  # hypercorn reads the addresses from it
        return self._inner.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # Inside hypercorn's shield: this scope's own deadline still applies. The deadline is
        # for the peer taking *no* data: it starts again whenever the socket takes some, so a
        # client reading slowly but steadily (a large event at a few hundred KB/s) is not cut.
        # Each socket send is a checkpoint already: none is added after the last (every
        # checkpoint on a request's path waits for a whole round of the loop's other tasks).
        sock = self._inner.socket
        with memoryview(data) as view:
            if not view:
                await trio.lowlevel.checkpoint()
                return
            sent = 0
            while True:
                with trio.move_on_after(self._send_timeout):
                    try:
                        sent += await sock.send(view[sent:])
                        if sent == len(view):
                            return
                    except OSError as exc:
                        if sock.fileno() == -1:
                            raise trio.ClosedResourceError("the connection was closed") from None
                        raise trio.BrokenResourceError(f"the peer is gone: {exc}") from exc
                    continue
                break
        self.abort()
        raise trio.BrokenResourceError(
            f"the peer took no data for {self._send_timeout} s "
            "(AGGREGATOR_SEND_TIMEOUT_SECONDS): connection closed"
        )

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def wait_delivered(self) -> None:
        """Until the peer's TCP has acknowledged every byte sent, or took none for
        ``send_timeout`` seconds, or the socket is closed.

        Closing a socket while bytes from the peer lie unread in it (a pipelined request, the
        rest of a body) resets the connection, and a reset drops what the kernel still holds to
        send: the answers of committed publishes, for a client that reads them slower than they
        were written. Waited for before each close. No bound on the whole wait: a peer that
        takes a byte now and then stretches it as it can stretch any send, and what it sends
        meanwhile is capped (``_TCPServer._read_until_closed``)."""
        sock = self._inner.socket
        pause, longest = _DELIVERY_POLL_SECONDS
        deadline = trio.current_time() + self._send_timeout
        queued = _unacknowledged(sock)
        while queued and trio.current_time() < deadline:
            await trio.sleep(pause)
            pause = min(pause * 2, longest)
            before, queued = queued, _unacknowledged(sock)
            if queued < before:  # the peer takes data: the clock starts again
                deadline = trio.current_time() + self._send_timeout

    def abort(self) -> None:
        """Close the socket now: a task blocked on it wakes with ``ClosedResourceError``."""
        self._inner.socket.close()


class _TCPServer(TCPServer):
    """hypercorn's connection, whose protocol refusals say why (``_explain_refusals``), and
    which shutdown closes either before a request is read or after it is answered.

    hypercorn's own decides to close an idle connection when shutdown begins, then closes it
    over several awaits; bytes read meanwhile were still parsed and served: a publish committed,
    its answer written to a closed socket (seen under CPU load in
    ``test_sigterm_under_load_drains_and_exits_0``). Here the decision and the read exclude each
    other: each is taken with no checkpoint in it. A request that started (``_busy``) keeps its
    connection until answered; once closing, what is read is dropped unparsed (the client sees
    the connection end with nothing stored), up to ``drop_limit`` bytes: past it the connection
    is reset (``_read_until_closed``)."""

    _busy = False  # hypercorn's Updated(idle=False) until Updated(idle=True)
    _closing = False
    _handed = False  # to the read process

    def __init__(
        self,
        app: Any,
        config: hypercorn.config.Config,
        context: WorkerContext,
        state: ConnectionState,
        stream: PeerStream,
        *,
        drop_limit: int,
        prefix: bytes = b"",
        served: int = 0,
        take: Callable[[Any, bytes, int], bool] | None = None,
    ) -> None:
        """``prefix``: the bytes read already of a connection the read process handed back,
        served first; ``served``: the requests it had served until then (in either process),
        from which hypercorn counts on to its ``keep_alive_max_requests``. ``take``: offered
        the connection with the bytes that begin a request and its count, True when it took
        them (``ReadSide.take``)."""
        super().__init__(app, config, context, state, stream)  # type: ignore[arg-type]
        self._peer = stream
        self._drop_limit = drop_limit
        self.prefix = prefix
        self._served = served
        self.take = take
        self._answered = trio.Event()  # no request under way (set with _busy False)
        self._answered.set()

    async def protocol_send(self, event: Any) -> None:
        if isinstance(event, RawData):
            await self._send_raw(event.data)
            return
        if isinstance(event, Updated):
            self._busy = not event.idle  # set before any checkpoint: _idle_timeout reads it
            if event.idle:
                self._answered.set()
            elif self._answered.is_set():
                self._answered = trio.Event()
        if isinstance(event, Closed) and self._answering():
            # The reader met a body whose framing broke (or its end) while the route's answer
            # is under way (a 405 given before the body was read): closing now cut that answer
            # after its head. The route is told (a route waiting for the body ends), the answer's
            # end closes the connection (the request cannot be recycled), and what is read
            # meanwhile is dropped.
            self._closing = True
            await self.protocol.handle(Closed())
            return
        await super().protocol_send(event)

    async def _offered(self, protocol: object, data: bytes | bytearray) -> bool:
        """Whether ``take`` took the connection with ``data``: only bytes that begin a read, and
        only between two requests. Bytes that begin the next request while the answer to the
        last one is still being sent wait for its end (h11 would hold them as long): a client
        that sends its next request as soon as it has read an answer would otherwise stay here.
        """
        if not opens_with_read(data) or not isinstance(protocol, H11Protocol):
            return False
        connection = protocol.connection
        if connection.their_state is h11.DONE and not connection.trailing_data[0]:
            await self._answered.wait()
        if self._closing or not self._between_requests(protocol):
            return False
        assert self.take is not None
        return self.take(self.stream.socket, bytes(data), protocol.keep_alive_requests)

    def _between_requests(self, protocol: object) -> bool:
        """Nothing of a request is read, or held: the next bytes begin one."""
        if not isinstance(protocol, H11Protocol) or self._busy:
            return False
        connection = protocol.connection
        return (
            connection.our_state is h11.IDLE
            and connection.their_state is h11.IDLE
            and not connection.trailing_data[0]
        )

    def _answering(self) -> bool:
        protocol = self.protocol.protocol
        return isinstance(protocol, H11Protocol) and protocol.connection.our_state is h11.SEND_BODY

    async def _send_raw(self, data: bytes) -> None:
        """hypercorn's send of ``RawData``, with the checkpoints that only add rounds of the loop
        removed: under load each round waits for every other connection's task, and an answer
        took three sends (head, body, and the empty end of a sized body), each behind a lock."""
        if not data:
            return  # nothing to write: h11's end of a body whose length was sent
        lock = self.send_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # no waiter can exist: the send below is the checkpoint
        try:
            with trio.CancelScope(shield=True):
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._answered.set()  # no answer is under way any more: a reader waiting ends
            await self.protocol.handle(Closed())
        finally:
            lock.release()

    async def _idle_timeout(self) -> None:
        with trio.move_on_after(self.config.keep_alive_timeout):
            await self.context.terminated.wait()
        if self._busy:
            return  # becoming idle after its answer starts this again, and closes then
        self._closing = True
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    async def _initiate_server_close(self) -> None:
        await self.protocol.handle(Closed())
        await self._close()

    async def _close(self) -> None:
        """hypercorn's: half-close, then close, but only once what was sent was delivered
        (``PeerStream.wait_delivered``). Meanwhile the reader drops what it reads (bytes left
        unread would make the close a reset)."""
        self._closing = True  # before any checkpoint: the reader parked by h11 sees it
        self._answered.set()  # a reader waiting to offer its bytes (_offered) drops them
        if self._handed:  # the read process has the connection: only this descriptor closes
            await self.stream.aclose()
            return
        # The peer gone, or a send under way: closing ends it.
        with contextlib.suppress(
            trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError
        ):
            await self.stream.send_eof()
        await self.stream.wait_delivered()
        await self.stream.aclose()

    async def _read_data(self) -> None:
        # The protocol exists from here on (``run`` made it); HTTP/2 is refused anyway.
        protocol = self.protocol.protocol
        if not isinstance(protocol, H11Protocol):
            await self._read_until_closed()
            return
        connection = _explain_refusals(protocol, self.config, lambda: self._closing)
        _ignore_h2c_upgrades(protocol)
        # A connection's requests are counted across both processes (docs/design.md, "Where it
        # differs from the server's front"): one handed back goes on from its count, and
        # hypercorn closes it after its keep_alive_max_requests-th request in all.
        protocol.keep_alive_requests = self._served
        try:
            await self._read_until_closed()
        finally:  # the closures refer to the protocol: no cycle outlives the connection
            vars(connection).pop("next_event", None)
            vars(protocol).pop("_send_error_response", None)
            vars(protocol).pop("_check_protocol", None)

    async def _read_until_closed(self) -> None:
        """hypercorn's ``_read_data``, but bytes read once the connection is closing are
        dropped instead of parsed, at most ``drop_limit`` of them: a peer that sends more
        while its close waits for it to take the answers (``PeerStream.wait_delivered``) is
        hostile or broken, and reading on for it cost a core at its bandwidth. It is reset.
        Bytes that begin a request between two others are offered to ``take`` first, but for
        the ``prefix`` of a connection handed back: the read process refused it, and offering it
        again bounced the connection between the processes for good (a ``GET /events`` with
        ``Expect``, a body or a head h11 refuses), each process at a core."""
        protocol = self.protocol.protocol
        dropped = 0
        while True:
            data: bytes | bytearray = self.prefix
            handed_back = bool(self.prefix)
            self.prefix = b""
            try:
                with trio.fail_after(self.config.read_timeout or inf):
                    data = data or await self.stream.receive_some(_RECEIVE_BYTES)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            if (
                self.take is not None
                and not handed_back
                and not self._closing
                and await self._offered(protocol, data)
            ):
                self._handed = True
                self.stream.abort()  # this descriptor; the read process has its own
                await self.idle_task.stop()
                break
            if data and _said_close(protocol):  # what follows its last request: dropped
                dropped += len(data)
                if dropped > self._drop_limit:
                    self._peer.abort()
                    break
                continue
            if self._closing:
                if data == b"":
                    break
                dropped += len(data)
                if dropped > self._drop_limit:
                    self._peer.abort()  # bytes unread: a reset, which ends the wait at once
                    break
                continue  # dropped, read until the close
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                if _owes_an_answer(protocol):
                    # The client half-closed after whole requests: it still reads. Told now,
                    # the route under way took it for a disconnect (Quart cancels on it), and
                    # the request went unanswered whenever its answer had not begun before the
                    # end of the stream was read (the read process answers every one).
                    await self._answered.wait()
                break
        await self.protocol.handle(Closed())
        if not self._busy:
            # Nothing left to answer. hypercorn's connection closes once its keep-alive timer
            # has run out: a client that closed between requests held its descriptor (CLOSE-WAIT)
            # for the whole AGGREGATOR_KEEP_ALIVE_SECONDS, and under the file limit the server
            # accepted nobody meanwhile although every client had gone.
            await self.idle_task.stop()


def _owes_an_answer(protocol: object) -> bool:
    """The client ended its stream after a whole request whose answer has not begun (h11 took
    the end as the client's close: its state is CLOSED, ours still SEND_RESPONSE). An answer
    already under way (a ``/subscribe`` stream) is told of the end at once, as before."""
    if not isinstance(protocol, H11Protocol):
        return False
    connection = protocol.connection
    return connection.their_state is h11.CLOSED and connection.our_state is h11.SEND_RESPONSE


def _said_close(protocol: object) -> bool:
    """The client's last request said ``Connection: close`` (or was HTTP/1.0), and is read."""
    return isinstance(protocol, H11Protocol) and protocol.connection.their_state is h11.MUST_CLOSE


def drop_limit(head_bytes: int, max_body_bytes: int) -> int:
    """What a closing connection reads and drops before it is reset: twice the largest request
    (a head of h11's limit, a body of ``max_body_bytes``; 8 MiB by default). An honest client
    sends on only until it sees the close: the request it had begun and those already in the
    sockets' buffers. Dropping them costs less than serving two such requests, which any client
    may ask."""
    return 2 * (head_bytes + max_body_bytes)


def _ignore_h2c_upgrades(protocol: H11Protocol) -> None:
    """Serve a request asking ``Upgrade: h2c`` over HTTP/1.1, as a server may (RFC 9110 section
    7.8). hypercorn switched such a GET to HTTP/2 and served it as its stream 1, whatever
    ``h2_max_concurrent_streams``: an h2c ``/subscribe`` whose client gave a flow-control window
    of 0 held its last message for ever, shielded, past the end of the grace, and SIGTERM ended
    in exit 1 ("not stopped"). HTTP/2 by prior knowledge (``PRI *``) still opens no stream."""
    check = protocol._check_protocol

    async def check_protocol(request: h11.Request) -> None:
        for name, value in request.headers:
            if name == b"upgrade" and value.strip().lower() == b"h2c":
                return
        await check(request)

    protocol._check_protocol = check_protocol  # type: ignore[method-assign,assignment]


def _unacknowledged(sock: Any) -> int:
    """Bytes of ``sock``'s send queue not acknowledged by the peer; 0 when it is closed or reset
    (the kernel keeps the count of a reset connection: it would never fall), or where the kernel
    does not say (not Linux)."""
    if _UNACKNOWLEDGED is None or sock.fileno() == -1:
        return 0
    try:
        if sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0] == _TCP_CLOSE:
            return 0
        answer = fcntl.ioctl(sock.fileno(), _UNACKNOWLEDGED, struct.pack("i", 0))
    except OSError:
        return 0
    (queued,) = struct.unpack("i", answer)
    return int(queued)


def _explain_refusals(
    protocol: H11Protocol, config: hypercorn.config.Config, closing: Callable[[], bool]
) -> object:
    """Make ``protocol``'s error answers name h11's reason: its error is kept as its connection
    raises it, and its error answer (empty in hypercorn) is replaced by one with a body. Returns
    that connection (a WebSocket upgrade replaces it with another)."""
    connection = protocol.connection
    next_event = connection.next_event
    reason = ["the request is not valid HTTP/1.1 (RFC 9112)"]

    def recording() -> Any:
        # No further request: h11 would park the reader on one it holds. Or the client said
        # close: what it sent after its request (RFC 9112 section 9.6 forbids it) is dropped;
        # h11 called it an error, and the 400 "not served" replaced the answer of a publish
        # that was stored.
        if closing() or connection.their_state is h11.MUST_CLOSE:
            return h11.NEED_DATA
        try:
            return next_event()
        except h11.RemoteProtocolError as exc:
            reason[0] = _refusal(exc, config)
            raise

    async def send_error_response(status_code: int) -> None:
        body = msgspec.json.encode(
            ErrorBody(_REFUSAL_KINDS.get(status_code, "bad_request"), reason[0])
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *config.response_headers("h11"),
        ]
        # One send, its bytes made with no await between: the route may be answering (a 405
        # given without reading the body), and its answer, made between two of these events,
        # failed in h11 and left it in its error state, the 400's body never sent.
        events = (h11.Response(status_code=status_code, headers=headers), h11.Data(data=body))
        current = protocol.connection
        try:
            data = b"".join(current.send(event) or b"" for event in (*events, h11.EndOfMessage()))
        except h11.LocalProtocolError:
            if current.their_state is not h11.ERROR:
                raise
            return
        await protocol.send(RawData(data=data))

    connection.next_event = recording  # type: ignore[method-assign]
    protocol._send_error_response = send_error_response  # type: ignore[method-assign]
    return connection


_REFUSAL_KINDS = {431: "headers_too_large", 501: "not_implemented"}


def _refusal(exc: h11.RemoteProtocolError, config: hypercorn.config.Config) -> str:
    status = exc.error_status_hint
    if status == 431:
        return (
            f"the request line and headers are too large: {config.h11_max_incomplete_size} bytes, "
            "the limit, came without their end; the request was not served and the connection "
            "is closed"
        )
    what = str(exc) or "the request is not valid HTTP/1.1"
    if status == 501:
        return (
            f"{what} (or a Content-Length): the request was not served and the connection is closed"
        )
    return (
        f"the request is not valid HTTP/1.1 (RFC 9112): {what}; the request was not served and "
        "the connection is closed"
    )


class _DrainUnderAnswer:
    """ASGI: each message of an HTTP answer given before the body was read to its end is sent
    while what the client still sends is read and dropped.

    hypercorn's reader hands each piece of a body to the route through a queue of
    ``max_app_queue_size`` (10) messages. A route that answers without reading the body (405,
    413, 401) stops taking from it; a body of many small chunks filled it, and the reader waited;
    then the end of the answer, closing the stream, put its ``http.disconnect`` on the same full
    queue and waited too. The answer was sent but the connection never closed: busy for ever
    (no keep-alive timeout), and SIGTERM waited the whole grace for it. Once the stream is
    closed, hypercorn drops the rest of the body itself. Any message, not only the last: a send
    that fails (the peer reset) makes hypercorn queue the ``http.disconnect`` at once, and that
    waited for ever too. Only an answer given before the body was read to its end can meet
    this: any other is sent as it is (no task per request). No route reads a body after its
    answer began, so the drain takes nothing a route wants."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        # The body read to its end, or none declared (RFC 9112 section 6.3): nothing can fill
        # the queue, the usual case.
        read = not any(
            name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
            for name, value in scope["headers"]
        )

        async def receiving() -> dict[str, Any]:
            nonlocal read
            message: dict[str, Any] = await receive()
            read = read or not message.get("more_body", False)
            return message

        async def sending(message: dict[str, Any]) -> None:
            if read:
                await send(message)
                return
            failure: Exception | None = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drop_all, receive)
                try:
                    await send(message)
                # An error is re-raised bare, not in the nursery's group (a cancellation still
                # comes grouped: hypercorn and _split handle groups).
                except Exception as exc:
                    failure = exc
                nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure

        await self._app(scope, receiving, sending)


async def _drop_all(receive: Any) -> None:
    while True:
        await receive()


class HttpServer:
    """Serves ``app`` on the configured address until ``stop``; ``abort`` then ends what is left."""

    def __init__(
        self,
        app: Any,
        config: hypercorn.config.Config,
        incidents: Incidents,
        *,
        send_timeout: float,
        max_body_bytes: int,
        reads: ReadSide | None = None,
    ) -> None:
        self._app = wrap_app(_DrainUnderAnswer(app), config.wsgi_max_body_size, "asgi")
        self._reads = reads
        self._state: ConnectionState | None = None
        self._config = config
        self._incidents = incidents
        self._send_timeout = send_timeout
        self._drop_limit = drop_limit(config.h11_max_incomplete_size, max_body_bytes)
        self._context = WorkerContext(None)
        self._open: set[PeerStream] = set()
        self._ended = trio.Event()  # set whenever a connection ends
        self._accepting = trio.CancelScope()
        self._connections: trio.Nursery | None = None

    @property
    def connections(self) -> int:
        return len(self._open)

    async def serve(self, *, task_status: trio.TaskStatus[list[str]]) -> None:
        """Listen and serve; report the bound URLs. Returns once ``stop`` was called and every
        connection has ended (``abort`` ends them)."""
        state: dict[str, Any] = {}
        lifespan = Lifespan(self._app, self._config, state)
        try:
            sockets = self._config.create_sockets()
        except OSError as exc:  # the bare errno would not say which address, or what to change
            where = ", ".join(self._config.bind)
            raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror} (--port)") from exc
        listeners = []
        binds = []
        for sock in sockets.insecure_sockets:
            sock.listen(self._config.backlog)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
            binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            try:
                async with trio.open_nursery() as connections:
                    self._connections = connections
                    self._state = ConnectionState(state.copy())
                    handler = partial(self._serve_connection, self._state)
                    task_status.started(binds)
                    spare = None if self._reads is None else self._reads.spare
                    if spare is not None:
                        spare.fit()
                    with self._accepting:
                        async with trio.open_nursery() as accepting:
                            for listener in listeners:
                                accepting.start_soon(_accept, listener, handler, connections, spare)
                    for listener in listeners:
                        await listener.aclose()
            finally:
                # The read process may still hand a connection back (``adopt``), until it has
                # seen its stop: starting it in the closed nursery raised, and the server
                # exited 1 on SIGTERM.
                self._connections = None
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def stop(self) -> None:
        """Stop accepting; idle keep-alive connections close, busy ones after their answer."""
        self._accepting.cancel()
        await self._context.terminated.set()

    async def wait_closed(self) -> None:
        """Until every connection has ended: after ``stop``, an idle one at once, a busy one after
        its answer, each once its peer has acknowledged what was sent."""
        while self._open:
            await self._ended.wait()

    def abort(self) -> None:
        """Close every connection now, a send under way included, and end their tasks."""
        for stream in list(self._open):
            stream.abort()
        if self._connections is not None:
            self._connections.cancel_scope.cancel()

    def adopt(self, sock: socket.socket, prefix: bytes, served: int = 0) -> None:
        """Serve a connection the read process handed back, from ``prefix``, the bytes it had
        read of it; ``served``: the requests the connection has served so far."""
        if self._connections is None or self._state is None:
            sock.close()  # not serving yet, or no longer: the client sees the connection end
            return
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        serving = partial(self._serve_connection, self._state, prefix=prefix, served=served)
        self._connections.start_soon(_closing, serving, stream)

    async def _serve_connection(
        self,
        state: ConnectionState,
        stream: trio.SocketStream,
        *,
        prefix: bytes = b"",
        served: int = 0,
    ) -> None:
        """``prefix``: the bytes read of a connection the read process handed back; ``served``:
        the requests it had served."""
        peer = _peer(stream)
        guarded = PeerStream(stream, self._send_timeout)
        self._open.add(guarded)
        try:
            await _TCPServer(
                self._app,
                self._config,
                self._context,
                state,
                guarded,
                drop_limit=self._drop_limit,
                prefix=prefix,
                served=served,
                take=None if self._reads is None else self._reads.take,
            )
        except BaseException as exc:
            cancelled, other = _split(exc)
            if other is not None:
                # hypercorn's protocol code failed on this connection alone: it ends, the
                # server goes on (docs/reliability.md, "Fault isolation").
                self._incidents.record("connection", other, f"serving the connection of {peer}")
            if cancelled is not None:
                raise cancelled from None
        finally:
            self._open.discard(guarded)
            guarded.abort()
            self._ended.set()
            self._ended = trio.Event()


# accept() failing for want of resources: the connection waits in the kernel's backlog.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_EXHAUSTED_RETRY_SECONDS = 0.1
_EXHAUSTED_LOG_SECONDS = 60.0


async def _accept(
    listener: trio.SocketListener, handler: Any, nursery: trio.Nursery, spare: Spare | None
) -> None:
    """trio's ``serve_listeners`` without its log flood: out of file descriptors, it logged an
    ERROR with a traceback every 0.1 s for as long as that lasted. Here one line, then at most
    one a minute while it goes on (each freed descriptor lets one connection in, then accept
    fails again). ``spare``: the descriptors kept for connections the read process hands back,
    refilled before each accept (a connection already served comes before a new one)."""
    async with listener:  # closed however this ends, a cancellation included
        await _accept_until_cancelled(listener, handler, nursery, spare)


async def _accept_until_cancelled(
    listener: trio.SocketListener, handler: Any, nursery: trio.Nursery, spare: Spare | None
) -> None:
    logged_at = -inf
    failures = 0
    while True:
        try:
            if spare is not None:
                spare.refill()
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _EXHAUSTED:
                raise
            failures += 1
            if trio.current_time() - logged_at >= _EXHAUSTED_LOG_SECONDS:
                logged_at = trio.current_time()
                LOGGER.error(
                    "cannot accept connections: %s (%d times since the last such line); new "
                    "ones wait in the kernel's backlog until some close (raise the process's "
                    "file limit, ulimit -n, or lower the clients' connections)",
                    exc.strerror,
                    failures,
                )
                failures = 0
            await trio.sleep(_EXHAUSTED_RETRY_SECONDS)
            continue
        nursery.start_soon(_closing, handler, stream)


async def _closing(handler: Any, stream: trio.SocketStream) -> None:
    """``handler(stream)``, then the stream closed whatever happened (as ``serve_listeners``)."""
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)


def _split(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """(what must go on unwinding: cancellation, an interrupt; the rest, a failure)."""
    keep: tuple[type[BaseException], ...] = (trio.Cancelled, KeyboardInterrupt, SystemExit)
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(keep)
    if isinstance(exc, keep):
        return exc, None
    return None, exc


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except (OSError, ValueError):
        return "a peer that is gone"
    return f"{host}:{port}"
