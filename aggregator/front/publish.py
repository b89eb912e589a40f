"""``POST /publish`` as a bare ASGI handler in front of the Quart app: the hot path.

At one event per request, Quart's request context, routing and response objects cost more than
everything else the server does for a publish (py-spy: about 40% of the trio thread). Here a
publish is read within the body limit, handed to the workers through the bounded ingest channel
(full ⇒ 429) and answered with what the pipeline replies, with no framework in between. Every
other route still goes to Quart, with two guards hypercorn and quart-trio do not give: a body must
arrive within the read timeout there too (408), and Quart's last response message is sent
shielded from cancellation. Routes only: no validation of events here.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import trio

from aggregator.decoders.publish import decode_publish
from aggregator.front.app import RETRY_AFTER_SECONDS, Front
from aggregator.front.responses import ErrorBody, PublishResult, error_body
from aggregator.incidents import internal_message
from aggregator.messages import Accepted, Internal, Rejection, Unavailable

PATH = "/publish"
_ENCODE = msgspec.json.Encoder().encode


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing to answer."""


class _Unread(Rejection):
    """A request refused before its body was read to the end (over the limit, too slow). The
    connection cannot carry another request, so the answer says ``Connection: close``: closing
    it without saying so lost the client's next request now and then (found by fuzz/server.py).
    """


class PublishRoute:
    """ASGI: answers ``/publish`` itself and passes everything else to ``app`` (Quart)."""

    def __init__(self, front: Front, app: Any, *, body_timeout: float) -> None:
        self._front = front
        self._app = app
        self._body_timeout = body_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope["path"] != PATH:
            try:
                receive = await self._with_whole_body(scope, receive)
            except Rejection as rejection:  # the body was not read to its end
                # The door's route never runs: counted here under its door (OTLP, Loki, bulk).
                self._front.metrics.count_refused_before_route(scope["path"], rejection.error)
                await _answer(send, rejection.status, error_body(rejection), close=True)
                return
            except _Disconnected:
                return
            await _final_message_shielded(self._app, scope, receive, send)
            return
        close = False
        if scope["method"] == "POST":
            # Held from the hand-over to the workers until the answer is sent: at the end of
            # the shutdown grace, a request whose events may be committed gets its answer.
            with contextlib.ExitStack() as held:
                try:
                    status, body = await self._publish(scope, receive, held)
                except _Disconnected:
                    return
                except _Unread as unread:
                    status, body, close = unread.status, error_body(unread), True
                except Exception as exc:  # a bug here answers this request alone
                    what = f"serving POST {PATH}"
                    request_id = self._front.incidents.record("route", exc, what)
                    status = 500
                    body = _internal(Internal("route", request_id, stored_nothing=False))
                await self._answer(send, status, body, close)
            return
        refusal = ErrorBody(
            "method_not_allowed", f"{scope['method']} {PATH}: only POST is allowed here"
        )
        await self._answer(send, 405, refusal, declares_body(scope))  # a body left unread

    async def _answer(
        self, send: Any, status: int, body: PublishResult | ErrorBody, close: bool
    ) -> None:
        if isinstance(body, ErrorBody):
            self._front.metrics.count_rejected("publish", body.error)
        await _answer(send, status, body, close=close)

    async def _with_whole_body(self, scope: Any, receive: Any) -> Any:
        """For the other routes: a body the request declares must arrive within the read
        timeout too, or a client could hold its connection open by never finishing one (the
        route may answer without reading it). ``receive`` for the app, the body read already."""
        if not declares_body(scope):
            return receive
        length = dict(scope["headers"]).get(b"content-length")
        declared = length.decode("latin-1") if length else None
        body = await self._read_body(receive, declared, f"{scope['method']} {scope['path']}")
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                message: dict[str, Any] = await receive()  # the disconnect, when it comes
                return message
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    async def _publish(
        self, scope: Any, receive: Any, held: contextlib.ExitStack
    ) -> tuple[int, PublishResult | ErrorBody]:
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        body = await self._read_body(receive, headers.get("content-length"))
        held.enter_context(self._front.intake.hold())
        outcome = await self._front.submit(body, headers, decode_publish)
        if isinstance(outcome, Accepted):
            self._front.metrics.count_published("publish", outcome.stored, outcome.duplicates)
            return 200, PublishResult(outcome.accepted, outcome.stored, outcome.duplicates)
        if isinstance(outcome, Unavailable):
            return 503, _unavailable(outcome)
        if isinstance(outcome, Internal):
            return 500, _internal(outcome)
        return outcome.status, error_body(outcome)

    async def _read_body(
        self, receive: Any, content_length: str | None, other: str | None = None
    ) -> bytes:
        """The whole body; ``other`` names a request of another route than ``POST /publish``
        (its rejections then say nothing about storing)."""
        limit = self._front.max_body_bytes
        too_large = _Unread(
            413,
            "too_large",
            f"the body is over {limit} bytes, the limit (AGGREGATOR_MAX_BODY_BYTES)",
        )
        if content_length is not None and content_length.isdigit() and int(content_length) > limit:
            raise too_large
        outcome = "nothing was stored" if other is None else f"{other} was not served"
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self._body_timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        raise _Unread(
            408,
            "request_timeout",
            f"the body did not arrive within {self._body_timeout} s "
            f"(AGGREGATOR_READ_TIMEOUT_SECONDS); {outcome}",
        )


def declares_body(scope: Any) -> bool:
    """The request says a body follows (``ReadRoute`` passes such a request on, too)."""
    headers = dict(scope["headers"])
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


async def _final_message_shielded(app: Any, scope: Any, receive: Any, send: Any) -> None:
    """Run ``app`` with its last response message shielded from cancellation.

    Quart-trio cancels its request's task group once the response body is handed over, and that
    can cancel the final, empty body message before hypercorn has it. The response then never
    ends on hypercorn's side, so the keep-alive connection never counts as idle and is never
    closed at the keep-alive timeout.
    """

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await send(message)
        else:
            await send(message)

    await app(scope, receive, sending)


async def _answer(
    send: Any, status: int, body: PublishResult | ErrorBody, *, close: bool = False
) -> None:
    headers = [(b"content-type", b"application/json")]
    if close:
        headers.append((b"connection", b"close"))
    if status in (429, 503):
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    elif status == 405:  # only /publish answers 405 here
        headers.append((b"allow", b"POST"))
    encoded = _ENCODE(body)
    headers.append((b"content-length", str(len(encoded)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": encoded})


def _internal(outcome: Internal) -> ErrorBody:
    return ErrorBody("internal", internal_message(outcome.request_id, outcome.stored_nothing))


def _unavailable(outcome: Unavailable) -> ErrorBody:
    stored = (
        "nothing of the request was stored"
        if outcome.stored_nothing
        else "the request may or may not have been stored"
    )
    return ErrorBody(
        "unavailable",
        f"the store cannot take writes now: {outcome.reason}; {stored}; resend it later "
        "(a resend is safe: what was stored comes back as duplicates)",
    )
