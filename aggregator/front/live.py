"""The routes of the subscriber and operator side: ``/subscribe`` (SSE), ``/topics``, ``/metrics``.

Routes only, as in ``app.py``: the stream is ``stream.py``, the fan-out
``aggregator/actors/hub.py``, the metric definitions ``metrics.py``.
"""

from __future__ import annotations

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
from aggregator.front.events import stream_filters
from aggregator.front.metrics import CONTENT_TYPE, Snapshot
from aggregator.front.responses import TopicOut
from aggregator.front.stream import stream_events
from aggregator.messages import Detail, Rejection
from aggregator.store import ReadStore

ROUTES = frozenset(
    {
        "/publish",
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
CURSOR_RULE = "must be a seq cursor, an integer of at least 0"


def observe_request(front: Front, method: str, path: str, seconds: float) -> None:
    """Record a request's latency by route (bounded labels); streams are not requests to time."""
    if path != "/subscribe":
        route = path if path in ROUTES else "other"
        front.metrics.request_seconds.labels(method, route).observe(seconds)


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
        if front.hub.statistics().active >= front.max_subscribers:
            return reject(
                Rejection(
                    503,
                    "unavailable",
                    f"{front.max_subscribers} subscribers are connected, the limit "
                    "(AGGREGATOR_MAX_SUBSCRIBERS); try again later",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            )
        filters = await stream_filters(front.readers, request.args)
        body = stream_events(
            front.hub,
            front.readers,
            topic,
            after,
            heartbeat_seconds=front.heartbeat_seconds,
            incidents=front.incidents,
            filters=filters,
        )
        response = Response(
            body,
            content_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
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
        snapshot = Snapshot(
            received=counters.received,
            stored=counters.unique_processed,
            duplicates=counters.duplicate_dropped,
            expired=counters.expired,
            topics=len(counters.topics),
            queue_depth=queue.current_buffer_used,
            queue_capacity=front.queue_size,
            subscribers=hub.active,
            subscribers_lagged=hub.lagged,
            tail_reads=hub.tail_reads,
            database_bytes=size,
        )
        return Response(front.metrics.render(snapshot), content_type=CONTENT_TYPE)
