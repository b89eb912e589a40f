"""The Elasticsearch door: ``POST|PUT /_bulk`` and ``/{index}/_bulk``, and the ``GET /`` /
``HEAD /`` handshake, as a bare ASGI route in front of the Quart app (the bulk path is as hot
as ``/publish``, and goes through the same workers and writer: ``Front.submit``).

Answers are in Elasticsearch's shapes, since shippers decide on them whether to resend: per
item ``201 created``, ``200 noop`` (an ``index`` of a key already stored: the first copy is
kept), ``409 version_conflict_engine_exception`` (a ``create`` of a key already stored) or
``400`` with the reason; the whole request ``400`` / ``413`` / ``429
es_rejected_execution_exception`` / ``503``, with ``Retry-After`` on the last two, and then
nothing is stored. Every answer carries ``X-Elastic-Product: Elasticsearch``, which the
official clients check, and the compatibility media type the client asked for.
"""

from __future__ import annotations

import contextlib
import time
from functools import partial
from typing import Any

import msgspec

from aggregator import __version__
from aggregator.decoders.elastic import BulkItems, Item, decode_bulk
from aggregator.front.app import RETRY_AFTER_SECONDS, Front
from aggregator.incidents import internal_message
from aggregator.messages import Accepted, EventRecord, Internal, Unavailable

PROTOCOL = "elasticsearch"
BULK = "/_bulk"
# The version a client is told: the major it asked for with compatible-with (8 or 9), else 8.
VERSIONS = {"8": "8.19.0", "9": "9.1.0"}
# compatible-with values answered (7: Elasticsearch 8 serves 7's REST compatibility too).
COMPATIBLE = ("7", "8", "9")
DOOR_PATHS = ("/", "/_cat/health")
# What the clients read of an item is its status (and error); "_shards" and "_seq_no" are left
# out (half the answer's bytes), "_version" is 1 as events are never updated.
_CREATED = b',"_version":1,"result":"created","status":201}}'
_NOOP = b',"_version":1,"result":"noop","status":200}}'  # nothing written: the first copy kept
_ENCODE = msgspec.json.Encoder().encode
# Rejection kinds of the shared decoders, in the words of Elasticsearch's error types.
_ERROR_TYPES = {
    "too_large": "content_too_long_exception",
    "malformed": "parse_exception",
    "unsupported_media_type": "media_type_header_exception",
    "overloaded": "es_rejected_execution_exception",
}


def bulk_index(path: str) -> tuple[bool, str | None]:
    """Whether ``path`` is a bulk path, and the index it names (None for ``/_bulk``)."""
    if path == BULK:
        return True, None
    if path.endswith(BULK) and path.count("/") == 2:
        return True, path[1 : -len(BULK)]
    return False, None


class ElasticRoute:
    """ASGI: answers the Elasticsearch paths itself and passes everything else to ``app``. The
    body has been read within its limit and timeout before (``PublishRoute``)."""

    def __init__(self, front: Front, app: Any) -> None:
        self._front = front
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        bulk, index = bulk_index(path)
        major = _compatible_with(scope)
        if major is not None and major not in COMPATIBLE and (bulk or path in DOOR_PATHS):
            # Elasticsearch's answer to a version it does not serve; answered without echoing it.
            message = (
                f"compatible-with={major or '(none)'} is not served here; send "
                f"compatible-with={' or '.join(COMPATIBLE)} in Accept and Content-Type"
            )
            scope = {**scope, "headers": _without_compatible(scope["headers"])}
            await _answer(scope, send, 400, _error(400, "media_type_header_exception", message))
        elif path == "/" and method in ("GET", "HEAD"):
            await _answer(scope, send, 200, _version_document(scope), head=method == "HEAD")
        elif path == "/_cat/health" and method in ("GET", "HEAD"):
            # rsyslog's omelasticsearch asks this (GET) before it resumes after a failure; it
            # says what /health says (it said green while the store had stalled or was damaged).
            reason = await self._front.unhealthy()
            line = f"{int(time.time())} aggregator green 1 1\n"
            if reason is not None:
                line = f"{int(time.time())} aggregator red 1 1 {reason}\n"
            status = 200 if reason is None else 503
            await _answer_text(send, status, line.encode(), head=method == "HEAD")
        elif not bulk:
            await self._app(scope, receive, send)
        elif method in ("POST", "PUT"):
            try:
                status, body = await self._bulk(scope, receive, index)
            except Exception as exc:  # a bug here answers this request alone
                request_id = self._front.incidents.record("route", exc, f"serving {method} {path}")
                status, body = 500, _error(500, "internal", internal_message(request_id, False))
            await _answer(scope, send, status, body)
        else:
            message = f"{method} {path}: only POST and PUT are allowed here"
            await _answer(scope, send, 405, _error(405, "method_not_allowed", message))

    async def _bulk(
        self, scope: Any, receive: Any, index: str | None
    ) -> tuple[int, bytes | dict[str, Any]]:
        started = time.perf_counter()
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        answers = BulkItems()
        decode = partial(decode_bulk, url_index=index, out=answers)
        outcome = await self._front.submit(body, headers, decode)
        if isinstance(outcome, Accepted):
            refused = sum(item.event is None for item in answers.items)
            self._front.metrics.count_published(
                PROTOCOL, outcome.stored, outcome.duplicates, refused
            )
            took = round((time.perf_counter() - started) * 1000)
            if answers.actions:
                return 200, _usual_items(answers.actions, answers.events, outcome, took)
            return 200, self._items(answers.items, outcome, took)
        if isinstance(outcome, Unavailable):
            stored = "nothing was stored" if outcome.stored_nothing else "it may have been stored"
            reason = f"the store cannot take writes now: {outcome.reason}; {stored}; resend later"
            status, kind = 503, "unavailable_shards_exception"
        elif isinstance(outcome, Internal):
            reason = internal_message(outcome.request_id, outcome.stored_nothing)
            status, kind = 500, "internal"
        else:
            status, reason = outcome.status, outcome.message
            kind = _ERROR_TYPES.get(outcome.error, outcome.error)
        self._front.metrics.count_rejected(PROTOCOL, kind)
        return status, _error(status, kind, reason)

    def _items(self, items: list[Item], outcome: Accepted, took: int) -> bytes:
        """The bulk answer, encoded a piece at a time (a dict per item cost a fifth of the
        door's time at 100 items a request)."""
        flags = outcome.stored_flags
        out = []
        errors = False
        heads: dict[tuple[str, str | None], bytes] = {}  # (action, index) -> encoded
        for item in items:
            key = (item.action, item.index)
            start = heads.get(key)
            if start is None:
                start = heads[key] = b'{"%s":{"_index":%s,"_id":' % (
                    item.action.encode(),
                    _ENCODE(item.index),
                )
            head = start + _ENCODE(item.id)
            if item.event is None:
                error = _ENCODE({"type": item.error, "reason": item.reason})
                out.append(head + b',"status":%d,"error":%s}}' % (item.status, error))
                errors = True
            elif flags[item.event]:
                out.append(head + _CREATED)
            elif item.action == "create":
                out.append(head + _conflict(item.id, item.index))
                errors = True
            else:  # index of a stored key: nothing is written, and the answer says so
                out.append(head + _NOOP)
        return b'{"took":%d,"errors":%s,"items":[%s]}' % (
            took,
            b"true" if errors else b"false",
            b",".join(out),
        )


def _usual_items(
    actions: list[str], events: list[EventRecord], outcome: Accepted, took: int
) -> bytes:
    """The answer to a request whose every item became an event (item i is event i)."""
    out = []
    errors = False
    heads: dict[tuple[str, str], bytes] = {}  # (action, topic) -> encoded
    for action, event, stored in zip(actions, events, outcome.stored_flags, strict=True):
        key = (action, event.topic)
        start = heads.get(key)
        if start is None:
            start = heads[key] = b'{"%s":{"_index":%s,"_id":' % (
                action.encode(),
                _ENCODE(event.topic),
            )
        if stored:
            out.append(start + _ENCODE(event.event_id) + _CREATED)
        elif action == "create":
            out.append(start + _ENCODE(event.event_id) + _conflict(event.event_id, event.topic))
            errors = True
        else:
            out.append(start + _ENCODE(event.event_id) + _NOOP)
    return b'{"took":%d,"errors":%s,"items":[%s]}' % (
        took,
        b"true" if errors else b"false",
        b",".join(out),
    )


def _conflict(event_id: str | None, index: str | None) -> bytes:
    reason = _ENCODE(
        f"[{event_id}]: version conflict, document already exists (current version [1]); "
        "events are stored once, the first copy is kept"
    )
    return (
        b',"status":409,"error":{"type":"version_conflict_engine_exception",'
        b'"reason":%s,"index":%s}}}' % (reason, _ENCODE(index))
    )


async def _answer_text(send: Any, status: int, body: bytes, *, head: bool) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=UTF-8"),
        (b"x-elastic-product", b"Elasticsearch"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 503:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def _error(status: int, kind: str, reason: str) -> dict[str, Any]:
    cause = {"type": kind, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def _compatible_with(scope: Any) -> str | None:
    """The major version of ``compatible-with=N`` in Accept (else Content-Type); None if none."""
    headers = dict(scope["headers"])
    for name in (b"accept", b"content-type"):
        value: str = headers.get(name, b"").decode("latin-1").lower()
        _, found, rest = value.partition("compatible-with=")
        if found:
            # The whole number: "10" was read as "1" and answered as compatible-with=1.
            return rest[: len(rest) - len(rest.lstrip("0123456789"))]
    return None


def _without_compatible(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name not in (b"accept", b"content-type")]


def _version_document(scope: Any) -> dict[str, Any]:
    """What ``GET /`` says: an Elasticsearch-compatible version (the clients refuse 7.x and
    below for some APIs), and which program this really is."""
    number = VERSIONS.get(_compatible_with(scope) or "8", VERSIONS["8"])
    return {
        "name": "aggregator",
        "cluster_name": "aggregator",
        "cluster_uuid": "aggregator",
        "version": {
            "number": number,
            "build_flavor": "default",
            "build_type": "aggregator",
            "build_hash": __version__,
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
        "aggregator": f"pubsub-aggregator {__version__}: only the bulk API is served",
    }


async def _answer(scope: Any, send: Any, status: int, body: Any, *, head: bool = False) -> None:
    """Send the answer. To a client without a User-Agent (rsyslog's omelasticsearch), "retry
    later" is a cut connection: it resends a bulk request only when the transfer fails, and
    takes any complete answer, 429 and 503 too, as final (its messages would be lost)."""
    encoded = body if isinstance(body, bytes) else _ENCODE(body)
    cut = (status == 429 or status >= 500) and b"user-agent" not in dict(scope["headers"])
    major = _compatible_with(scope)
    media = (
        f"application/vnd.elasticsearch+json; compatible-with={major}"
        if major
        else "application/json"
    )
    headers = [
        (b"content-type", media.encode()),
        (b"x-elastic-product", b"Elasticsearch"),
        (b"content-length", str(len(encoded)).encode()),
    ]
    if status in (429, 503):
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    elif status == 405:
        headers.append((b"allow", b"POST, PUT"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if not cut:
        await send({"type": "http.response.body", "body": b"" if head else encoded})
        return
    # One byte short of its Content-Length: the HTTP server refuses to end the response and
    # closes the connection (hypercorn raises h11's LocalProtocolError here, on purpose).
    await send({"type": "http.response.body", "body": encoded[:-1], "more_body": True})
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b""})
