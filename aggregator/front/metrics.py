"""Prometheus metrics, in a registry this service owns (never the process-wide default one).

Two kinds:

- what happens in this process, observed as it happens: request latency per route, rejected
  publish requests by reason, events per transaction and commit latency;
- what the store and the actors know, read at each scrape into a ``Snapshot``: the event counters
  come from the same transactional counters as ``/stats`` (so the two always agree, across
  restarts), queue depth, subscribers, database size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aggregator.actors.integrity import STATES
from aggregator.actors.syslog import RESULTS, TRANSPORTS
from aggregator.incidents import STAGES
from aggregator.messages import EventRecord
from aggregator.store import CommitResult, Retention, Upkeep, WriteStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EVENT_BUCKETS = (1, 10, 100, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a scrape reads from the store and the actors."""

    received: int
    stored: int
    duplicates: int
    expired: int
    topics: int
    queue_depth: int
    queue_capacity: int
    subscribers: int
    subscribers_lagged: int
    tail_reads: int
    database_bytes: int
    integrity_check: str = "off"  # the background check's state, one of STATES
    integrity_seconds: float | None = None  # how long it took, once finished


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._s = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._s
        yield CounterMetricFamily(
            "aggregator_events_received", "events accepted in publish requests", value=s.received
        )
        yield CounterMetricFamily(
            "aggregator_events_stored", "unique events stored (unique_processed)", value=s.stored
        )
        yield CounterMetricFamily(
            "aggregator_events_duplicate",
            "events dropped as duplicates (duplicate_dropped)",
            value=s.duplicates,
        )
        yield CounterMetricFamily(
            "aggregator_events_expired", "stored events deleted by retention", value=s.expired
        )
        yield GaugeMetricFamily(
            "aggregator_events_stored_now",
            "events stored now (stored less expired)",
            value=s.stored - s.expired,
        )
        yield GaugeMetricFamily("aggregator_topics", "topics with stored events", value=s.topics)
        yield GaugeMetricFamily(
            "aggregator_ingest_queue_depth",
            "publish requests waiting for a worker",
            value=s.queue_depth,
        )
        yield GaugeMetricFamily(
            "aggregator_ingest_queue_capacity",
            "publish requests that may wait before 429",
            value=s.queue_capacity,
        )
        yield GaugeMetricFamily(
            "aggregator_subscribers_active", "live /subscribe streams", value=s.subscribers
        )
        yield CounterMetricFamily(
            "aggregator_subscribers_lagged",
            "times a subscriber's buffer was full and it went back to replay",
            value=s.subscribers_lagged,
        )
        yield CounterMetricFamily(
            "aggregator_tail_reads", "store reads by the live tail", value=s.tail_reads
        )
        yield GaugeMetricFamily(
            "aggregator_database_size_bytes",
            "disk space of the store (SQLite: file and WAL; PostgreSQL: the database)",
            value=s.database_bytes,
        )
        check = GaugeMetricFamily(
            "aggregator_store_integrity_check",
            "the store's background integrity check (PRAGMA quick_check): 1 for its state now; "
            "damaged stops the server",
            labels=["state"],
        )
        for state in STATES:
            check.add_metric([state], 1 if state == s.integrity_check else 0)
        yield check
        if s.integrity_seconds is not None:
            yield GaugeMetricFamily(
                "aggregator_store_integrity_check_seconds",
                "how long the finished integrity check took",
                value=s.integrity_seconds,
            )


# The publish route of each front door with a fixed path, and its ``protocol`` label.
DOORS = {"/publish": "publish", "/v1/logs": "otlp", "/loki/api/v1/push": "loki"}


class Metrics:
    """The service's own registry and the metrics observed as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "aggregator_http_request_duration_seconds",
            "time to answer an HTTP request, by route (streams excluded)",
            ["method", "route"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "aggregator_publish_rejected",
            "publish requests refused, by front door (protocol) and reason (the error kind)",
            ["protocol", "reason"],
            registry=self.registry,
        )
        self.published = Counter(
            "aggregator_publish_events",
            "events of acknowledged publish requests, by front door (protocol) and result: "
            "stored, duplicate, refused (an item a bulk request refused alone, or a record an "
            "OTLP partial success left out)",
            ["protocol", "result"],
            registry=self.registry,
        )
        self.internal_errors = Counter(
            "aggregator_internal_errors",
            "unexpected failures answered for one request (500) or one tail read, by stage",
            ["stage"],
            registry=self.registry,
        )
        for stage in STAGES:  # every stage shows, at 0, before its first incident
            self.internal_errors.labels(stage)
        self.transaction_events = Histogram(
            "aggregator_transaction_events",
            "events per committed transaction (group commit)",
            buckets=EVENT_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "aggregator_commit_duration_seconds",
            "time of one transaction on the writer's thread, BEGIN to COMMIT",
            registry=self.registry,
        )

        syslog = Counter(
            "aggregator_syslog_messages",
            "syslog messages by transport and what became of them: stored, duplicate, "
            "malformed, too_large, truncated (cut by the end of its connection), dropped "
            "(read but not committed: UDP overload, shutdown's grace over, an internal error)",
            ["transport", "result"],
            registry=self.registry,
        )
        self._syslog = {(t, r): syslog.labels(t, r) for t in TRANSPORTS for r in RESULTS}
        self.syslog_connections = Gauge(
            "aggregator_syslog_connections", "open syslog TCP connections", registry=self.registry
        )
        self.syslog_pending = Gauge(
            "aggregator_syslog_pending",
            "syslog messages read and not yet committed (TCP and UDP)",
            registry=self.registry,
        )

    def count_rejected(self, protocol: str, reason: str) -> None:
        """A refused publish request; ``protocol`` names its door (publish, otlp, loki, ...)."""
        self.rejected.labels(protocol, reason).inc()

    def count_published(
        self, protocol: str, stored: int, duplicates: int, refused: int = 0
    ) -> None:
        """An acknowledged publish request of the door ``protocol``."""
        for result, events in (("stored", stored), ("duplicate", duplicates), ("refused", refused)):
            self.published.labels(protocol, result).inc(events)

    def count_syslog(self, transport: str, result: str, messages: int) -> None:
        if messages:
            self._syslog[transport, result].inc(messages)

    def count_syslog_connections(self, delta: int) -> None:
        self.syslog_connections.inc(delta)

    def count_syslog_pending(self, delta: int) -> None:
        self.syslog_pending.inc(delta)

    def count_unauthorized(self, path: str) -> None:
        """A 401: counted as a refused publish when its path is a front door's publish route."""
        door = DOORS.get(path, "elasticsearch" if path.endswith("/_bulk") else None)
        if door is not None:
            self.count_rejected(door, "unauthorized")

    def count_incident(self, stage: str) -> None:
        self.internal_errors.labels(stage).inc()

    def render(self, snapshot: Snapshot) -> bytes:
        scrape = CollectorRegistry()
        scrape.register(_SnapshotCollector(snapshot))
        return generate_latest(scrape) + generate_latest(self.registry)


class MeasuredStore:
    """A ``WriteStore`` that times each commit and counts its events (on the writer's thread;
    prometheus-client metrics are thread-safe)."""

    def __init__(self, store: WriteStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        started = time.perf_counter()
        result = self._store.commit(batches)
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        self._metrics.transaction_events.observe(sum(len(batch) for batch in batches))
        return result

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        return self._store.maintain(retention, max_events, reclaim=reclaim)

    def probe(self, reserve_bytes: int) -> None:
        self._store.probe(reserve_bytes)

    def close(self) -> None:
        self._store.close()
