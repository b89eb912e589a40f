"""The HTTP front (quart-trio): the read routes, error bodies, and what every route shares.

Routes only: no SQL, no validation of events. ``POST /publish``, the hot path, is a bare ASGI
route in front of this app (``publish.py``); the live routes are in ``live.py``.
"""

from __future__ import annotations

# werkzeug binds each request's host with the "idna" codec, whose module Python imports at the
# first use: at the first request through the routes. Out of descriptors then, that import failed
# and every route answered 500 (/health, /stats, /metrics) until descriptors were free. Imported
# with the app, at start.
import encodings.idna  # noqa: F401
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from aggregator import __version__
from aggregator.actors.hub import Hub
from aggregator.actors.integrity import IntegrityMonitor
from aggregator.actors.monitor import WriterMonitor
from aggregator.actors.readers import ReaderPool
from aggregator.actors.sse import event_out
from aggregator.front.events import next_link, read_query, search_refused
from aggregator.front.metrics import Metrics
from aggregator.front.openapi import openapi_document
from aggregator.front.responses import Stats, error_body
from aggregator.incidents import Incidents, internal_message
from aggregator.messages import (
    Decoder,
    Detail,
    Internal,
    PublishOutcome,
    Rejection,
    Submission,
    Unavailable,
)
from aggregator.store import StoreDamaged, StoreUnavailable
from aggregator.store.query import SearchBuilding, SearchOff

LOGGER = logging.getLogger(__name__)
MAX_CURSOR = 2**63 - 1  # SQLite's INTEGER
RETRY_AFTER_SECONDS = 1


class Intake:
    """The publish requests handed to the workers and not answered yet, and the end of the
    shutdown grace (``cutoff``): from then on the workers answer what is still queued with a
    503 and store nothing of it, while what already reached the writer waits for its commit's
    answer (``service.py`` waits for ``wait_answered`` before closing the connections)."""

    def __init__(self) -> None:
        self.cutoff = trio.Event()
        self._pending = 0
        self._answered = trio.Event()
        self._answered.set()

    @property
    def pending(self) -> int:
        return self._pending

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Count a request from its hand-over until its answer is sent (nesting counts once
        more: the count is zero only when every holder is done)."""
        if self._pending == 0:
            self._answered = trio.Event()
        self._pending += 1
        try:
            yield
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._answered.set()

    async def wait_answered(self) -> None:
        while self._pending:
            await self._answered.wait()


class StreamCount:
    """Open ``/subscribe`` streams, counted from their handler's start to its end
    (``live.SubscribeLimit``), whatever the hub knows of them: a stalled stream that lagged is
    out of the hub's fan-out but still holds its connection and its memory."""

    def __init__(self) -> None:
        self.active = 0


@dataclass(frozen=True, slots=True)
class Front:
    """What the routes need: the ingest channel's send end, the readers, the writer's health."""

    ingest: trio.MemorySendChannel[Submission]
    readers: ReaderPool
    writer: WriterMonitor
    max_body_bytes: int
    queue_size: int
    started: float  # time.monotonic() at start-up
    hub: Hub
    metrics: Metrics
    heartbeat_seconds: float
    max_subscribers: int
    incidents: Incidents
    integrity: IntegrityMonitor | None = None  # None: no store check (tests of the routes)
    intake: Intake = field(default_factory=Intake)
    max_offset: int = 10_000
    probes: ReaderPool | None = None  # the probes' own reader; None: they share ``readers``
    streams: StreamCount = field(default_factory=StreamCount)

    async def submit(
        self, body: bytes, headers: Mapping[str, str], decode: Decoder
    ) -> PublishOutcome:
        """Hand a request to the workers and wait for its outcome; 429 when the queue is full.
        Each door counts its outcome in the metrics under its own ``protocol``."""
        reply_send, reply_recv = trio.open_memory_channel[PublishOutcome](1)
        if self.intake.cutoff.is_set():
            return Unavailable("the server is shutting down")
        try:
            self.ingest.send_nowait(Submission(body, headers, decode, reply_send))
        except trio.WouldBlock:
            return Rejection(
                429,
                "overloaded",
                f"the ingest queue is full ({self.queue_size} requests waiting, "
                "AGGREGATOR_QUEUE_SIZE); nothing was stored, resend after "
                f"{RETRY_AFTER_SECONDS} s",
                retry_after=RETRY_AFTER_SECONDS,
            )
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return Unavailable("the server is shutting down")
        with self.intake.hold():
            async with reply_recv:
                return await reply_recv.receive()

    async def unhealthy(self) -> str | None:
        """Why the store cannot take writes now (``/health``'s reason); None when it can.
        Every door's health check asks this, so that none says healthy when another does not."""
        writer = self.writer.statistics()
        integrity = self.integrity.statistics() if self.integrity is not None else None
        if integrity is not None and integrity.damage is not None:
            return integrity.damage
        if not writer.running:
            return "the writer is not running"
        if writer.last_error is not None:
            return f"the last transaction failed: {writer.last_error}"
        if (stalled := self.writer.stalled()) is not None:
            return (
                f"the store has not answered the writer for {stalled:.0f} s "
                "(AGGREGATOR_STALL_SECONDS)"
            )
        try:
            # A reader of its own: long reads on the others cannot make the probe wait.
            await (self.probes or self.readers).run(lambda r: r.ping())
        except StoreUnavailable as exc:
            return f"the store does not answer reads: {exc}"
        except StoreDamaged as exc:
            return str(exc)
        return None


def refusal(outcome: Rejection | Unavailable | Internal) -> tuple[int, str, str]:
    """A refused submission as a shipper door answers it: (status, error kind, message)."""
    if isinstance(outcome, Unavailable):
        return (
            503,
            "unavailable",
            f"the store cannot take writes now: {outcome.reason}; retry later",
        )
    if isinstance(outcome, Internal):
        return 500, "internal", internal_message(outcome.request_id, outcome.stored_nothing)
    return outcome.status, outcome.error, outcome.message


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode(body), status=status, headers=headers, content_type="application/json"
    )


def reject(rejection: Rejection) -> Response:
    headers = None
    if rejection.retry_after is not None:
        headers = {"Retry-After": str(rejection.retry_after)}
    return json_response(error_body(rejection), rejection.status, headers)


def _int_arg(name: str, default: int, minimum: int, rule: str) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= MAX_CURSOR:
        raise Rejection(
            422, "validation", f"{name} {rule}; got {raw!r}", [Detail(None, name, rule)]
        )
    return value


async def events_answer(
    front: Front, args: Mapping[str, str]
) -> tuple[bytes, dict[str, str] | None]:
    """``GET /events``: its JSON body, and its ``Link`` header when there is a next page.
    Raises what ``as_rejection`` turns into an answer (Quart's route and ``ReadRoute`` share
    this)."""
    query = read_query(args, max_offset=front.max_offset)
    try:
        rows = await front.readers.run(
            lambda r: r.find(replace(query, limit=query.limit + 1)),
            search=query.search is not None,
        )
    except (SearchOff, SearchBuilding) as exc:
        raise search_refused(exc) from None
    page = [event_out(row) for row in rows[: query.limit]]
    headers = None
    if len(rows) > query.limit:
        headers = {"Link": next_link(args, query, page[-1].seq)}
    return msgspec.json.encode(page), headers


async def stats_answer(front: Front) -> bytes:
    """``GET /stats``: its JSON body."""
    counters = await front.readers.run(lambda r: r.counters())
    return msgspec.json.encode(
        Stats(
            counters.received,
            counters.unique_processed,
            counters.duplicate_dropped,
            counters.topics,
            round(time.monotonic() - front.started, 3),
        )
    )


def as_rejection(exc: Rejection | StoreUnavailable | StoreDamaged) -> Rejection:
    """What a read route answers for a refusal or a store that cannot answer."""
    if isinstance(exc, StoreUnavailable):
        return Rejection(
            503,
            "unavailable",
            f"the store does not answer: {exc}",
            retry_after=RETRY_AFTER_SECONDS,
        )
    if isinstance(exc, StoreDamaged):
        # Not "retry later": the server is stopping, and no retry can read a damaged page.
        return Rejection(503, "store_damaged", f"{exc}; the server is stopping")
    return exc


class RequestTracker:
    """ASGI wrapper that counts HTTP requests in progress, so that shutdown waits for exactly
    those: a request counts until its response has been handed to the socket. ``observe`` is
    told each request's method, path and duration."""

    def __init__(self, app: Any, observe: Callable[[str, str, float], None] | None = None) -> None:
        self._app = app
        self._observe = observe
        self._active = 0
        self._idle = trio.Event()
        self._idle.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if self._active == 0:
            self._idle = trio.Event()
        self._active += 1
        started = time.perf_counter()
        try:
            await self._app(scope, receive, send)
        finally:
            self._active -= 1
            if self._observe is not None:
                self._observe(scope["method"], scope["path"], time.perf_counter() - started)
            if self._active == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        while self._active:
            await self._idle.wait()


def create_app(front: Front) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = front.max_body_bytes

    @app.get("/events")
    async def events() -> Response:
        body, headers = await events_answer(front, request.args)
        return Response(body, headers=headers, content_type="application/json")

    @app.get("/stats")
    async def stats() -> Response:
        return Response(await stats_answer(front), content_type="application/json")

    @app.get("/livez")
    async def livez() -> Response:
        return json_response({"status": "ok"})  # answering at all is the whole check

    @app.get("/health")
    @app.get("/readyz")
    async def health() -> Response:
        integrity = front.integrity.statistics() if front.integrity is not None else None
        reason = await front.unhealthy()
        # /readyz adds how the background integrity check stands (/health keeps its contract).
        detail = {}
        if integrity is not None and request.path == "/readyz":
            detail = {"integrity_check": integrity.check}
        if reason is not None:
            return json_response(
                {"status": "unavailable", "reason": reason, **detail},
                503,
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return json_response({"status": "ok", **detail})

    document = msgspec.json.encode(openapi_document(__version__))

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return Response(document, content_type="application/json")

    @app.errorhandler(Rejection)
    @app.errorhandler(StoreUnavailable)
    @app.errorhandler(StoreDamaged)
    async def refused(exc: Rejection | StoreUnavailable | StoreDamaged) -> Response:
        return reject(as_rejection(exc))

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(exc: RequestEntityTooLarge) -> Response:
        return reject(
            Rejection(
                413,
                "too_large",
                f"the body is over {front.max_body_bytes} "
                "bytes, the limit (AGGREGATOR_MAX_BODY_BYTES)",
            )
        )

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        # Any other exception a route raises: this request gets a 500, the server goes on.
        what = f"serving {request.method} {request.path}"
        request_id = front.incidents.record("route", exc, what)
        return json_response(
            {"error": "internal", "message": internal_message(request_id, stored_nothing=True)},
            500,
        )

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        kind = (exc.name or "error").lower().replace(" ", "_")
        message = f"{request.method} {request.path}: {exc.description}"
        # Keep what the exception says besides its body, e.g. 405's Allow.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return json_response({"error": kind, "message": message}, exc.code or 500, headers)

    return app
