"""The routes of the subscriber and operator side: ``/subscribe`` (SSE), ``/topics``, ``/metrics``.

Routes only, as in ``app.py``: the stream is ``stream.py``, the fan-out
``aggregator/actors/hub.py``, the metric definitions ``metrics.py``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from aggregator.front.app import (
    MAX_CURSOR,
    RETRY_AFTER_SECONDS,
    Front,
    _int_arg,
    json_response,
    reject,
)
from aggregator.front.metrics import CONTENT_TYPE, Snapshot
from aggregator.front.responses import TopicOut
from aggregator.front.stream import stream_events
from aggregator.messages import Detail, Rejection
from aggregator.store import ReadStore

ROUTES = frozenset(
    {
        "/publish",
        "/_bulk",
        "/",
        "/_cat/health",
        "/events",
        "/stats",
        "/health",
        "/livez",
        "/readyz",
        "/topics",
        "/metrics",
        "/subscribe",
    }
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
CURSOR_RULE = "must be a seq cursor, an integer of at least 0"


class SubscribeLimit:
    """ASGI: ``GET /subscribe`` beyond ``AGGREGATOR_MAX_SUBSCRIBERS`` open streams is refused
    with 503 before it starts; a stream counts from here until its handler returns, so stalled
    streams the hub has dropped from its fan-out still count (they hold their connection)."""

    def __init__(self, app: Any, front: Front) -> None:
        self._app = app
        self._front = front

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not (
            scope["type"] == "http" and scope["path"] == "/subscribe" and scope["method"] == "GET"
        ):
            await self._app(scope, receive, send)
            return
        streams, limit = self._front.streams, self._front.max_subscribers
        if streams.active >= limit:
            await _refuse(
                send,
                f"{limit} subscribers are connected, the limit "
                "(AGGREGATOR_MAX_SUBSCRIBERS); try again later",
            )
            return
        streams.active += 1
        try:
            await self._app(scope, receive, send)
        finally:
            streams.active -= 1


async def _refuse(send: Any, message: str) -> None:
    body = msgspec.json.encode({"error": "unavailable", "message": message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def observe_request(front: Front, method: str, path: str, seconds: float) -> None:
    """Record a request's latency by route (bounded labels); streams are not requests to time."""
    if path != "/subscribe":
        route = path if path in ROUTES else "/{index}/_bulk" if path.endswith("/_bulk") else "other"
        # Methods too: a client may send any token as a method, and each new one would be a
        # label for good (20,000 invented methods made /metrics 35 MB).
        verb = method if method in METHODS else "other"
        front.metrics.request_seconds.labels(verb, route).observe(seconds)


def _last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_CURSOR:
        raise Rejection(
            422,
            "validation",
            f"Last-Event-ID {CURSOR_RULE}; got {raw!r}",
            [Detail(None, "Last-Event-ID", CURSOR_RULE)],
        )
    return value


def _topic_counts(reader: ReadStore) -> list[TopicOut]:
    return [
        TopicOut(
            row.topic,
            received=row.stored + row.duplicates,
            unique_processed=row.stored,
            duplicate_dropped=row.duplicates,
            last_seq=row.last_seq,
            stored_now=row.stored - row.expired,
            expired=row.expired,
        )
        for row in reader.topics()
    ]


def register_live_routes(app: QuartTrio, front: Front) -> None:
    @app.get("/subscribe")
    async def subscribe() -> Response:
        topic = request.args.get("topic")
        after = _int_arg("after", 0, 0, CURSOR_RULE)
        resume = _last_event_id()
        if resume is not None:  # a reconnecting EventSource: its last id wins over the URL
            after = resume
        if front.hub.closed:
            return reject(
                Rejection(
                    503,
                    "unavailable",
                    "the server is shutting down; reconnect with Last-Event-ID",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            )
        if request.method == "HEAD":  # the headers a stream would have, and no stream
            return Response(b"", content_type="text/event-stream", headers=STREAM_HEADERS)
        body = stream_events(
            front.hub,
            front.readers,
            topic,
            after,
            heartbeat_seconds=front.heartbeat_seconds,
            incidents=front.incidents,
        )
        response = Response(
            body,
            content_type="text/event-stream",
            headers=STREAM_HEADERS,
        )
        response.timeout = None  # a stream has no response timeout
        return response

    @app.get("/topics")
    async def topics() -> Response:
        return json_response(await front.readers.run(_topic_counts))

    @app.get("/metrics")
    async def metrics() -> Response:
        counters = await front.readers.run(lambda r: r.counters())
        size = await front.readers.run(lambda r: r.size_bytes())
        hub = front.hub.statistics()
        queue = front.ingest.statistics()
        integrity = front.integrity.statistics() if front.integrity is not None else None
        snapshot = Snapshot(
            received=counters.received,
            stored=counters.unique_processed,
            duplicates=counters.duplicate_dropped,
            expired=counters.expired,
            topics=len(counters.topics),
            queue_depth=queue.current_buffer_used,
            queue_capacity=front.queue_size,
            subscribers=front.streams.active,
            subscribers_lagged=hub.lagged,
            tail_reads=hub.tail_reads,
            database_bytes=size,
            integrity_check=integrity.check if integrity is not None else "off",
            integrity_seconds=integrity.seconds if integrity is not None else None,
        )
        return Response(front.metrics.render(snapshot), content_type=CONTENT_TYPE)
