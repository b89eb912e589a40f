"""The load: C clients, each sending its own batches in order, bounded by count or duration.

Batch ``j`` belongs to client ``j mod C``. A duration-bound run stops *taking* batches at the
deadline; batches already taken finish (with their retries), so nothing is left half-known. The
tally counts what was actually taken, and the distinct keys are those of the taken batches.
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import trio

from simulator.client import Delivery, PosterFactory, Publisher, RetryPolicy
from simulator.generator import KINDS, Batch, Generator, distinct_keys

LOGGER = logging.getLogger(__name__)
PREBUILD_LIMIT = 5_000_000  # events; a count-bound run up to this size is encoded before the clock


@dataclass(slots=True)
class Tally:
    """Running totals, owned by the runner; the progress display only reads them."""

    batches: int = 0
    events: int = 0  # every event of every finished batch, once (re-sends included)
    requests: int = 0  # HTTP attempts
    retries: int = 0
    acked_events: int = 0
    stored: int = 0  # from the 200 answers
    duplicates: int = 0
    ambiguous_events: int = 0
    abandoned_batches: int = 0
    abandoned_events: int = 0
    bad_acks: int = 0
    resends: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    keys_sent: list[tuple[int, ...]] = field(default_factory=list)

    def add(self, delivery: Delivery) -> None:
        batch = delivery.batch
        self.batches += 1
        self.events += batch.size
        self.requests += delivery.attempts
        self.retries += delivery.attempts - 1
        self.ambiguous_events += delivery.ambiguous_events
        self.failures.update(delivery.failures)
        self.keys_sent.append(batch.key_ids)
        for kind in KINDS:
            self.resends[kind] += getattr(batch, kind)
        if delivery.acked:
            self.acked_events += batch.size
            self.stored += delivery.stored
            self.duplicates += delivery.duplicates
            self.latencies.append(delivery.latency)
            if delivery.error is not None:
                self.bad_acks += 1
        else:
            self.abandoned_batches += 1
            self.abandoned_events += batch.size


@dataclass(frozen=True, slots=True)
class RunResult:
    tally: Tally
    elapsed: float
    distinct_keys: int


class Pacer:
    """Caps the events/s offered by all clients together (``rate`` 0: no cap)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._next = 0.0

    async def wait(self, events: int) -> None:
        if not self._rate:
            return
        now = trio.current_time()
        slot = max(now, self._next)
        self._next = slot + events / self._rate
        await trio.sleep_until(slot)


@dataclass(frozen=True, slots=True)
class Load:
    generator: Generator
    policy: RetryPolicy
    make_http: PosterFactory  # one HTTP client (and connection) per simulated client
    duration: float = 0.0
    rate: float = 0.0
    seed: int = 0
    sleep: Callable[[float], Awaitable[None]] = trio.sleep  # the backoff's; injectable for tests


def _plans(generator: Generator) -> list[Iterator[Batch]]:
    clients = range(generator.clients)
    if generator.total and generator.total <= PREBUILD_LIMIT:
        # Encode every body before the clock starts: the send loop does no per-event work.
        return [iter(list(generator.batches_for(c))) for c in clients]
    return [generator.batches_for(c) for c in clients]


async def run_load(
    load: Load,
    tally: Tally,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> RunResult:
    """Send every client's batches; ``task_status.started()`` once the bodies are ready and the
    clock starts, so a progress display can start then."""
    plans = _plans(load.generator)
    pacer = Pacer(load.rate)
    started = trio.current_time()
    deadline = started + load.duration if load.duration else float("inf")
    task_status.started()
    async with trio.open_nursery() as nursery:
        for client, plan in enumerate(plans):
            nursery.start_soon(_run_client, client, plan, load, pacer, deadline, tally)
    elapsed = trio.current_time() - started
    distinct = _distinct(load.generator, tally.keys_sent)
    return RunResult(tally, elapsed, distinct)


def _distinct(generator: Generator, keys_sent: Sequence[tuple[int, ...]]) -> int:
    if generator.total and len(keys_sent) == generator.batch_count:
        return generator.distinct_total  # every batch went: the closed form
    return distinct_keys(keys_sent)


async def _run_client(
    client: int,
    plan: Iterator[Batch],
    load: Load,
    pacer: Pacer,
    deadline: float,
    tally: Tally,
) -> None:
    rng = random.Random(f"{load.seed}:backoff:{client}")
    async with load.make_http() as http:
        publisher = Publisher(
            http,
            load.policy,
            content_type=load.generator.content_type,
            gzip=load.generator.gzip,
            rng=rng,
            sleep=load.sleep,
        )
        for batch in plan:
            if trio.current_time() >= deadline:
                return
            await pacer.wait(batch.size)
            tally.add(await publisher.publish(batch))
