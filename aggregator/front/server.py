"""The HTTP server: hypercorn's HTTP/1.1 protocol on each connection, under this module's own
accept loop.

``hypercorn.trio.serve`` runs every connection as a task of one server nursery, so an exception
its protocol code raises outside any request (an ``Upgrade: h2c`` with a settings header that is
not base64, a client that breaks its chunked framing just as the server closes the connection)
ended that nursery, and the whole server with it. Here each connection runs hypercorn's
``TCPServer`` inside a guard: what it raises is logged once as an incident (stage
``connection``), that connection alone is closed, and the server goes on.

Each connection's stream also bounds how long one send may wait for the peer
(``AGGREGATOR_SEND_TIMEOUT_SECONDS``): hypercorn sends shielded from cancellation, so a client
that stops reading (a stalled ``/subscribe``) used to hold its task, its memory and the server's
shutdown for ever. And at the end of shutdown ``abort`` closes every connection still open, which
ends even a send under way at once.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import hypercorn.config
import trio
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from aggregator.incidents import Incidents

LOGGER = logging.getLogger(__name__)


class _PeerStream(trio.abc.HalfCloseableStream):
    """A connection's socket stream whose sends give up after ``send_timeout`` seconds, and that
    ``abort`` closes under any task using it."""

    def __init__(self, inner: trio.SocketStream, send_timeout: float) -> None:
        self._inner = inner
        self._send_timeout = send_timeout

    @property
    def socket(self) -> Any:  # hypercorn reads the addresses from it
        return self._inner.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # Inside hypercorn's shield: this scope's own deadline still applies.
        with trio.move_on_after(self._send_timeout):
            await self._inner.send_all(data)
            return
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

    def abort(self) -> None:
        """Close the socket now: a task blocked on it wakes with ``ClosedResourceError``."""
        self._inner.socket.close()


class HttpServer:
    """Serves ``app`` on the configured address until ``stop``; ``abort`` then ends what is left."""

    def __init__(
        self,
        app: Any,
        config: hypercorn.config.Config,
        incidents: Incidents,
        *,
        send_timeout: float,
    ) -> None:
        self._app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self._config = config
        self._incidents = incidents
        self._send_timeout = send_timeout
        self._context = WorkerContext(None)
        self._open: set[_PeerStream] = set()
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
        sockets = self._config.create_sockets()
        listeners = []
        binds = []
        for sock in sockets.insecure_sockets:
            sock.listen(self._config.backlog)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
            binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as connections:
                self._connections = connections
                handler = partial(self._serve_connection, ConnectionState(state.copy()))
                task_status.started(binds)
                with self._accepting:
                    await trio.serve_listeners(handler, listeners, handler_nursery=connections)
                for listener in listeners:
                    await listener.aclose()
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def stop(self) -> None:
        """Stop accepting; idle keep-alive connections close, busy ones after their answer."""
        self._accepting.cancel()
        await self._context.terminated.set()

    def abort(self) -> None:
        """Close every connection now, a send under way included, and end their tasks."""
        for stream in list(self._open):
            stream.abort()
        if self._connections is not None:
            self._connections.cancel_scope.cancel()

    async def _serve_connection(self, state: ConnectionState, stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        guarded = _PeerStream(stream, self._send_timeout)
        self._open.add(guarded)
        try:
            await TCPServer(self._app, self._config, self._context, state, guarded)  # type: ignore[arg-type]
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
