"""``GET /events`` and ``GET /stats`` as bare ASGI handlers in front of the Quart app: the read
hot path.

A page of ``/events`` cost the read process about 1.2 ms of CPU, and py-spy put ~30% of it in
Quart and the ASGI layers (request context, routing, ``Response``) against 0.44 ms in SQLite.
Here the query string is parsed as werkzeug parses ``request.args`` and the answer is the Quart
route's own: both call ``events_answer`` and ``stats_answer`` (``app.py``), and
``tests/test_readroute.py`` compares the two byte for byte. Everything else goes to ``app``:
``HEAD`` and the other methods (Quart answers those, 405 with ``Allow`` included), a request
with a body, every other path.

What quart-trio does around a route is done here too: the request is cancelled when the client
goes away (its ``http.disconnect``) while its read waits for a reader, so it is never made; and the
answer is given up after Quart's ``RESPONSE_TIMEOUT`` (the connection then closes).
"""

from __future__ import annotations

import math
import urllib.parse
from typing import Any

import msgspec
import trio

# Registers the "werkzeug.url_quote" error handler used below: a percent-escape that is not
# UTF-8 stays escaped, as in Quart's ``request.args``.
import werkzeug.urls  # noqa: F401

from aggregator.front.app import Front, as_rejection, events_answer, stats_answer
from aggregator.front.publish import declares_body
from aggregator.front.responses import error_body
from aggregator.incidents import internal_message
from aggregator.messages import Rejection
from aggregator.store import StoreDamaged, StoreUnavailable

_JSON = (b"content-type", b"application/json")


class ReadRoute:
    """ASGI: answers ``GET /events`` and ``GET /stats`` itself, everything else through ``app``."""

    def __init__(
        self, front: Front, app: Any, *, response_timeout: float | None, disconnects: bool = True
    ) -> None:
        """``response_timeout``: the Quart app's ``RESPONSE_TIMEOUT`` (None: none).
        ``disconnects``: whether ``receive`` may tell ``http.disconnect`` before the answer (the
        read process's never does: watching it would cost ~35 µs a request for nothing)."""
        self._front = front
        self._app = app
        self._response_timeout = math.inf if response_timeout is None else response_timeout
        self._disconnects = disconnects

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["path"] not in ("/events", "/stats")
            or declares_body(scope)
        ):
            await self._app(scope, receive, send)
            return
        # Watched only when the read must wait for a reader: one that has its reader at once
        # runs on its thread to the end whatever the client does, and the watch's task costs
        # three rounds of the loop (tests/test_rounds.py).
        if self._disconnects and not self._front.readers.reader_free():
            answer = await self._answer_unless_gone(scope, receive)
        else:
            answer = await self._answer(scope)
        if answer is None:
            return  # the client went away
        status, headers, body = answer
        sent = False
        with trio.move_on_after(self._response_timeout):  # as quart-trio's
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": True})
            sent = True
        if not sent:
            return  # given up: the answer is unfinished, and its connection closes
        # Its end outside the timeout: hypercorn closes or recycles the connection within this
        # send, and a cancellation there left the connection open. (hypercorn writes a body
        # shielded: once written, the timeout is past it, as it was for Quart's.)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _answer_unless_gone(
        self, scope: Any, receive: Any
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """As quart-trio: a client gone (its http.disconnect) cancels the request, and a read
        still waiting for a reader is never made (None then). Not watched while the answer is
        sent: hypercorn puts the request's own http.disconnect as the answer's end closes the
        stream, and cancelling the send then cut the close of a "Connection: close" connection
        (it stayed open until the keep-alive timeout)."""
        answer = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when_gone, receive, nursery.cancel_scope)
            answer = await self._answer(scope)
            nursery.cancel_scope.cancel()
        return answer

    async def _answer(self, scope: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        # In Quart's order: a response's own headers (Link, Retry-After), then its type and size.
        headers: list[tuple[bytes, bytes]] = []
        try:
            if scope["path"] == "/events":
                body, link = await events_answer(self._front, query_args(scope["query_string"]))
                if link is not None:
                    headers.extend((k.lower().encode(), v.encode()) for k, v in link.items())
            else:
                body = await stats_answer(self._front)
            status = 200
        except (Rejection, StoreUnavailable, StoreDamaged) as exc:
            rejection = as_rejection(exc)
            status, body = rejection.status, msgspec.json.encode(error_body(rejection))
            if rejection.retry_after is not None:
                headers.append((b"retry-after", str(rejection.retry_after).encode()))
        except Exception as exc:  # a bug here answers this request alone, as Quart's handler
            what = f"serving GET {scope['path']}"
            request_id = self._front.incidents.record("route", exc, what)
            status = 500
            message = internal_message(request_id, stored_nothing=True)
            body = msgspec.json.encode({"error": "internal", "message": message})
        headers.append(_JSON)
        headers.append((b"content-length", str(len(body)).encode()))
        return status, headers, body


async def _cancel_when_gone(receive: Any, request: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    request.cancel()


def query_args(query_string: bytes) -> dict[str, str]:
    """The query string as Quart's ``request.args`` reads it, first value of each name."""
    args: dict[str, str] = {}
    pairs = urllib.parse.parse_qsl(
        query_string.decode(), keep_blank_values=True, errors="werkzeug.url_quote"
    )
    for name, value in pairs:
        args.setdefault(name, value)
    return args
