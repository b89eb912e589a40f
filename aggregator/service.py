"""Wires the nursery: store, writer, workers, HTTP front. ``serve`` is the whole server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import hypercorn.config
import trio
from quart_trio import QuartTrio

from aggregator.actors.hub import Hub, run_tail
from aggregator.actors.integrity import IntegrityMonitor, run_integrity_check
from aggregator.actors.monitor import WriterMonitor
from aggregator.actors.readers import ReaderPool, open_reader_pool
from aggregator.actors.replay import ReplayCache
from aggregator.actors.syslog import SyslogDoor
from aggregator.actors.syslog_tcp import serve_syslog_tcp
from aggregator.actors.syslog_udp import serve_syslog_udp
from aggregator.actors.upkeep import UpkeepPlan
from aggregator.actors.workers import TopicBudget, run_worker
from aggregator.actors.writer import run_writer
from aggregator.config import Config
from aggregator.front.app import Front, Intake, RequestTracker, create_app
from aggregator.front.auth import BearerAuth, Tokens
from aggregator.front.elastic import ElasticRoute
from aggregator.front.guard import Guard
from aggregator.front.live import SubscribeLimit, observe_request, register_live_routes
from aggregator.front.loki import register_loki_routes
from aggregator.front.metrics import MeasuredStore, Metrics
from aggregator.front.otlp import register_otlp_routes
from aggregator.front.publish import PublishRoute
from aggregator.front.readroute import ReadRoute
from aggregator.front.readside import ReadSide, Start
from aggregator.front.server import HttpServer
from aggregator.incidents import Incidents
from aggregator.messages import Limits, Submission, WriteRequest
from aggregator.store import (
    Clock,
    IntegrityCheck,
    Retention,
    WriteStore,
    describe_store,
    open_integrity_check,
    open_reader,
    open_store,
    utc_now,
)

LOGGER = logging.getLogger(__name__)
# After the grace, how long the commits already under way may take to be answered; less than
# __main__'s STOP_MARGIN_SECONDS, so the store is still closed in time.
ANSWER_MARGIN_SECONDS = 3.0
DECODE_THREADS = 2


@dataclass(frozen=True, slots=True)
class Running:
    """What ``serve`` reports once it accepts connections."""

    url: str
    port: int
    writer: WriterMonitor
    hub: Hub
    syslog_tcp_port: int | None = None  # None: off
    syslog_udp_port: int | None = None


def _hypercorn_config(config: Config) -> hypercorn.config.Config:
    hc = hypercorn.config.Config()
    hc.bind = [f"{config.host}:{config.port}"]
    hc.accesslog = None
    # Partial headers and idle connections are cut at the keep-alive timeout (hypercorn counts a
    # connection idle until its headers are complete); a body must arrive within the read
    # timeout (PublishRoute, Quart's BODY_TIMEOUT). No hypercorn read_timeout: it limits the
    # silence of the *client*, and an SSE client is silent for the whole stream: /subscribe
    # would be cut every read_timeout seconds. A client that stops *reading* is cut by the
    # send timeout (``front/server.py``).
    hc.keep_alive_timeout = config.keep_alive_seconds
    hc.errorlog = logging.getLogger("hypercorn.error")  # through our logging, not its own
    # HTTP/1.1 only: every HTTP/2 stream is refused (RFC 9113's SETTINGS_MAX_CONCURRENT_STREAMS
    # of 0). No client here needs HTTP/2, and hypercorn 0.18's HTTP/2 code raises out of the
    # connection on one request with a byte above 0x7f in its :path or :method, or a CONNECT
    # without :path (issue 18 attack; docs/reliability.md).
    hc.h2_max_concurrent_streams = 0
    return hc


def create_routes(front: Front, config: Config) -> QuartTrio:
    """Every Quart route of the front; ``POST /publish`` is ``PublishRoute``, in front of it."""
    quart_app = create_app(front)
    register_live_routes(quart_app, front)
    register_otlp_routes(quart_app, front)
    register_loki_routes(quart_app, front)
    quart_app.config["BODY_TIMEOUT"] = config.read_timeout_seconds  # the whole body: 408 after
    return quart_app


def build_app(
    front: Front,
    config: Config,
    observe: Callable[[str, str, float], None],
    *,
    disconnects: bool = True,
) -> tuple[Guard, RequestTracker]:
    """The whole ASGI app, and its request tracker (shutdown waits on it). The read process
    answers through the same (``aggregator/reads.py``). ``disconnects``: whether the server
    tells a request that its client went away before its answer (the read process does not)."""
    tokens = Tokens(config.publish_token, config.read_token)
    quart_app = create_routes(front, config)
    doors = ElasticRoute(front, quart_app)
    routes = PublishRoute(front, doors, body_timeout=config.read_timeout_seconds)
    reads = ReadRoute(
        front,
        routes,
        response_timeout=quart_app.config["RESPONSE_TIMEOUT"],
        disconnects=disconnects,
    )
    limited = SubscribeLimit(reads, front)
    guarded = BearerAuth(limited, tokens, front.metrics.count_unauthorized)
    tracked = RequestTracker(guarded, observe)
    app = Guard(
        tracked,
        front.incidents,
        drain_bytes=config.max_body_bytes,
        drain_seconds=config.read_timeout_seconds,
    )
    return app, tracked


async def _serve_http(
    front: Front, config: Config, shutdown: trio.Event, *, task_status: trio.TaskStatus[list[str]]
) -> None:
    # The front owns the ingest channel's send end: when the requests in flight are answered,
    # closing it lets the workers drain, and then the writer.
    observe = partial(observe_request, front)
    app, tracked = build_app(front, config, observe)
    reads = None
    if config.read_process:
        damaged = front.integrity.damaged if front.integrity is not None else None
        reads = ReadSide(
            Start(config, front.started), observe, front.metrics.count_incident, damaged
        )
    server = HttpServer(
        app,
        _hypercorn_config(config),
        front.incidents,
        send_timeout=config.send_timeout_seconds,
        max_body_bytes=config.max_body_bytes,
        reads=reads,
    )
    async with front.ingest, trio.open_nursery() as nursery:
        try:
            binds = await nursery.start(server.serve)
            if reads is not None:
                await nursery.start(reads.run, server.adopt)
            task_status.started(binds)
            await shutdown.wait()
            await server.stop()  # no new connections; idle ones close
            front.hub.close()  # live streams end now, or they would hold shutdown for the grace
            with trio.move_on_after(config.shutdown_grace_seconds):
                if reads is not None:  # it answers what it has begun, and hands back nothing
                    await reads.stop()
                await tracked.wait_idle()
                # and every connection closed: answers still on their way to a slow reader
                # would be dropped by the abort below, or the process's exit
                await server.wait_closed()
            # The grace is over. What is still queued is answered 503 and not stored; a request
            # whose events reached the writer waits for that commit's answer, so that no client is
            # cut off from a request that was then stored (within a margin: past it the process's
            # own stop deadline, in __main__, is near).
            front.intake.cutoff.set()
            with trio.move_on_after(ANSWER_MARGIN_SECONDS):
                await front.intake.wait_answered()
        finally:
            # Then every connection still open is closed, a stalled peer's send included: the
            # store is closed and the process exits whatever the clients do. Also when this is
            # cancelled (a second signal): hypercorn's sends are shielded from cancellation.
            server.abort()
            if reads is not None:
                reads.kill()  # if it is still running


async def serve(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    clock: Clock = utc_now,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the aggregator until ``shutdown`` is set, then drain: every accepted request is
    committed and answered, the store is closed, and ``serve`` returns. ``clock`` is the wall
    clock of ``received_at`` and of retention by age (tests move it)."""
    shutdown = trio.Event() if shutdown is None else shutdown
    started = time.perf_counter()
    store: WriteStore = await trio.to_thread.run_sync(partial(open_store, config, clock=clock))
    LOGGER.info("opened the store in %.3f s", time.perf_counter() - started)
    check = open_integrity_check(config)
    integrity = IntegrityMonitor(shutdown.set, checking=check is not None)
    opener = partial(open_reader, config)
    try:
        # The probes and the live tail each have a reader of their own: long reads by clients
        # on the others cannot delay /health or the subscribers' fan-out.
        async with (
            open_reader_pool(opener, config.readers, integrity.damaged) as readers,
            open_reader_pool(opener, 1, integrity.damaged) as probes,
            open_reader_pool(opener, 1, integrity.damaged) as tail,
        ):
            pools = Readers(readers, probes, tail)
            await _run_pipeline(config, store, pools, shutdown, integrity, check, task_status)
        integrity.raise_damage()  # a reader or the check found it: the process exits 1
    finally:
        store.close()
    LOGGER.info("stopped; the store is closed")


async def _stop_on_crash(shutdown: trio.Event) -> None:
    """Cancelled before ``shutdown`` is set only when a task of the service crashed: the server
    is then stopping although nobody asked, and says so by setting ``shutdown``, which starts
    the process's stop deadline (``__main__``); unwinding some tasks (hypercorn's connections)
    may never finish."""
    try:
        await shutdown.wait()
    finally:
        shutdown.set()


async def _check_integrity(
    check: IntegrityCheck, integrity: IntegrityMonitor, shutdown: trio.Event
) -> None:
    """The background integrity check, cut short when the server stops."""
    async with trio.open_nursery() as nursery:

        async def stop() -> None:
            await shutdown.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop)
        await run_integrity_check(check, integrity)
        nursery.cancel_scope.cancel()


async def _start_syslog(
    nursery: trio.Nursery,
    config: Config,
    writer: trio.MemorySendChannel[WriteRequest],
    shutdown: trio.Event,
    door: SyslogDoor,
) -> tuple[int | None, int | None]:
    """Start the syslog listeners that are on (each with its own end of ``writer``); their
    bound ports, None for one that is off."""
    tcp = udp = None
    if config.syslog_tcp is not None:
        tcp = await nursery.start(
            serve_syslog_tcp, config.syslog_tcp, writer.clone(), shutdown, door
        )
    if config.syslog_udp is not None:
        udp = await nursery.start(
            serve_syslog_udp, config.syslog_udp, writer.clone(), shutdown, door
        )
    return tcp, udp


@dataclass(frozen=True, slots=True)
class Readers:
    """The reader pools: the clients', the probes', the live tail's."""

    clients: ReaderPool
    probes: ReaderPool
    tail: ReaderPool


async def _run_pipeline(
    config: Config,
    store: WriteStore,
    pools: Readers,
    shutdown: trio.Event,
    integrity: IntegrityMonitor,
    check: IntegrityCheck | None,
    task_status: trio.TaskStatus[Running],
) -> None:
    monitor = WriterMonitor(config.stall_seconds)
    intake = Intake()
    # Large bodies are decoded on threads: two at a time, the cores of a small machine.
    decode_threads = trio.CapacityLimiter(DECODE_THREADS)
    counters = await pools.clients.run(lambda r: r.counters())
    topics = TopicBudget(counters.topics, config.max_topics)
    metrics = Metrics()
    incidents = Incidents(metrics.count_incident)
    hub = Hub(
        buffer_events=config.subscriber_buffer_events,
        buffer_bytes=config.subscriber_buffer_bytes,
        replay=ReplayCache(kept_bytes=config.replay_cache_bytes),
    )
    limits = Limits(config.max_body_bytes, config.max_batch_events, config.max_payload_bytes)
    ingest_send, ingest_recv = trio.open_memory_channel[Submission](config.queue_size)
    # Room for every worker's request: all of them can wait for the next group commit.
    write_send, write_recv = trio.open_memory_channel[WriteRequest](config.workers)
    door = SyslogDoor(
        config.host,
        limits,
        config.syslog_buffer_bytes,
        config.syslog_max_connections,
        frame_seconds=config.read_timeout_seconds,
        retry_seconds=config.probe_seconds,
        grace_seconds=config.shutdown_grace_seconds,
        incidents=incidents,
        count=metrics.count_syslog,
        connections=metrics.count_syslog_connections,
        pending=metrics.count_syslog_pending,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_crash, shutdown)
        await nursery.start(
            partial(
                run_tail,
                hub,
                pools.tail,
                poll_seconds=config.tail_poll_seconds,
                incidents=incidents,
            )
        )
        await nursery.start(
            partial(
                run_writer,
                write_recv,
                MeasuredStore(store, metrics),
                monitor,
                max_txn_events=config.max_txn_events,
                on_commit=hub.notify,
                on_broken=shutdown.set,  # stop accepting; serve() then raises StoreBroken
                probe_seconds=config.probe_seconds,
                incidents=incidents,
                upkeep=UpkeepPlan(Retention(config.retention_seconds, config.retention_bytes)),
            )
        )
        async with write_send, ingest_recv:
            for _ in range(config.workers):
                worker = partial(
                    run_worker,
                    incidents=incidents,
                    cutoff=intake.cutoff,
                    decode_threads=decode_threads,
                    topics=topics,
                )
                await nursery.start(worker, ingest_recv.clone(), write_send.clone(), limits)
            syslog_ports = await _start_syslog(nursery, config, write_send, shutdown, door)
        front = Front(
            ingest_send,
            pools.clients,
            monitor,
            config.max_body_bytes,
            config.queue_size,
            time.monotonic(),
            hub,
            metrics,
            config.heartbeat_seconds,
            config.max_subscribers,
            incidents,
            integrity,
            intake,
            config.max_offset,
            pools.probes,
        )
        binds = await nursery.start(_serve_http, front, config, shutdown)
        url = binds[0]
        port = int(url.rsplit(":", 1)[1])
        LOGGER.info("listening on %s (store %s)", url, describe_store(config))
        task_status.started(Running(url, port, monitor, hub, *syslog_ports))
        if check is not None:  # after "ready": a large store takes seconds to check
            nursery.start_soon(_check_integrity, check, integrity, shutdown)
