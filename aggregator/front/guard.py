"""The outermost ASGI layer: whatever escapes the layers inside it still answers that request alone.

Quart's error handlers answer what a route raises (``app.py``), and ``POST /publish`` answers its
own bugs (``publish.py``). This answers what is raised around them — in the token check, the
request tracker, Quart building its request context — which hypercorn would turn into an empty
500 and a traceback of its own, with no request id and no count: a 500 naming a request id,
logged once and counted (``stage="route"``), as docs/reliability.md promises for every 500.

The server has no WebSocket route. A WebSocket handshake used to reach Quart, whose HTTP error
handlers then failed outside a request context: two tracebacks and a bare 500 per attempt. It is
refused here, before any route, with a 400 that points at ``/subscribe``.

A request with both ``Transfer-Encoding`` and ``Content-Length`` is refused here too (400, and the
connection closed). h11 reads such a body as chunked and kept the connection open; a proxy in front
that trusts ``Content-Length`` instead would see a different next request on the same connection:
request smuggling, which RFC 9112 section 6.3 answers by closing the connection. The body is read
(within ``drain_bytes`` and ``drain_seconds``) before the answer: answered with the body unread,
the bytes a client sent after it made h11 fail the connection while the answer was being sent, and
the client got nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import trio

from aggregator.front.responses import ErrorBody
from aggregator.incidents import Incidents, internal_message

LOGGER = logging.getLogger(__name__)
WEBSOCKET_REFUSAL = ErrorBody(
    "websocket_unsupported",
    "this server has no WebSocket endpoint; GET /subscribe streams events as Server-Sent "
    "Events (text/event-stream) over plain HTTP",
)
AMBIGUOUS_FRAMING = ErrorBody(
    "ambiguous_framing",
    "the request has both Transfer-Encoding and Content-Length, which RFC 9112 section 6.3 "
    "forbids (a proxy and this server could see different requests): send one of them; the "
    "request was not served and the connection is closed",
)


class Guard:
    """ASGI: runs ``app``; a WebSocket is refused; an exception is answered as a 500."""

    def __init__(
        self,
        app: Any,
        incidents: Incidents,
        *,
        drain_bytes: int = 1024 * 1024,
        drain_seconds: float = 10.0,
    ) -> None:
        self._app = app
        self._incidents = incidents
        self._drain_bytes = drain_bytes
        self._drain_seconds = drain_seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await _refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if _ambiguous(scope):
            if await self._drain(receive):
                await _respond(send, "http.response", 400, AMBIGUOUS_FRAMING, close=True)
            return
        started = False

        async def sending(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            try:
                await send(message)
            except (trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError):
                # hypercorn is closing the connection under the answer (the client broke its
                # framing, or went away): not a bug of this server.
                raise _ConnectionEnded from None

        try:
            await self._app(scope, receive, sending)
        except Exception as exc:
            if _only(exc, _ConnectionEnded):
                LOGGER.info("%s %s: the connection ended under its answer", *_request(scope))
                return
            what = f"serving {scope['method']} {scope['path']} (outside its route)"
            request_id = self._incidents.record("route", exc, what)
            if started:  # the answer is under way: the connection ends it, incomplete
                return
            safe = scope["method"] in ("GET", "HEAD", "OPTIONS")  # they store nothing
            body = ErrorBody("internal", internal_message(request_id, stored_nothing=safe))
            await _respond(send, "http.response", 500, body)

    async def _drain(self, receive: Any) -> bool:
        """Read and drop a body, up to the bounds; False if the client went away."""
        size = 0
        with trio.move_on_after(self._drain_seconds):
            while size <= self._drain_bytes:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return False
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        return True


class _ConnectionEnded(Exception):
    """The transport refused a message of the answer: the connection is gone."""


def _only(exc: BaseException, kind: type[Exception]) -> bool:
    """Whether ``exc`` is ``kind``, or a group (Quart's nursery) of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(inner, kind) for inner in exc.exceptions)
    return isinstance(exc, kind)


def _ambiguous(scope: Any) -> bool:
    names = {name for name, _ in scope.get("headers", ())}
    return b"transfer-encoding" in names and b"content-length" in names


def _request(scope: Any) -> tuple[str, str]:
    return scope["method"], scope["path"]


async def _refuse_websocket(scope: Any, receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":  # the client went away
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await _respond(send, "websocket.http.response", 400, WEBSOCKET_REFUSAL)
    else:  # the server can only close the handshake: the client gets a bare 403
        await send({"type": "websocket.close", "code": 1008})


async def _respond(
    send: Any, kind: str, status: int, body: ErrorBody, *, close: bool = False
) -> None:
    encoded = msgspec.json.encode(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(encoded)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": f"{kind}.start", "status": status, "headers": headers})
    await send({"type": f"{kind}.body", "body": encoded})
