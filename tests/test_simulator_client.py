"""At-least-once delivery: retries with backoff against a server that fails some requests, ending
with a verification that holds."""

from __future__ import annotations

import random
from functools import partial

import httpx
import pytest
import trio

from simulator.__main__ import expectation
from simulator.client import Publisher, Refused, RetryPolicy, retry_after_seconds
from simulator.generator import Generator
from simulator.runner import Load, Tally, run_load
from simulator.verify import fetch_stats, verify
from tests.simulator_fakes import FAULTS, FakeAggregator


def generator(total: int = 3_000, batch: int = 30, clients: int = 6) -> Generator:
    return Generator(seed=3, total=total, batch=batch, clients=clients, dup_ratio=0.3, topics=4,
                     id_style="uuid7", payload_bytes=32)  # fmt: skip


class RecordingSleep:
    """Backoff without waiting: records each delay and only yields to the scheduler."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await trio.lowlevel.checkpoint()


def http(fake: FakeAggregator) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url="http://fake", transport=fake.transport())


@pytest.mark.trio
async def test_faults_are_retried_and_the_accounting_holds() -> None:
    # Every 5th attempt fails, cycling through every kind of fault.
    fake = FakeAggregator(lambda n: FAULTS[(n // 5) % len(FAULTS)] if n % 5 == 0 else None)
    sleep = RecordingSleep()
    gen = generator()
    load = Load(gen, RetryPolicy(retries=5), partial(http, fake), seed=3, sleep=sleep)
    with trio.fail_after(10):
        async with http(fake) as control:
            before = await fetch_stats(control)
            result = await run_load(load, Tally())
            after = await fetch_stats(control)
    tally = result.tally
    assert tally.retries > 0 and tally.abandoned_batches == 0
    assert set(tally.failures) == {"503", "429", "500", "ReadTimeout", "ConnectError"}
    assert tally.ambiguous_events > 0  # the 500s and timeouts after commit
    assert result.distinct_keys == gen.distinct_total == len(fake.keys)
    # A committed-then-lost attempt counted its events once more in received:
    assert fake.received > tally.events
    checks = verify(before, after, expectation(result))
    assert [c.name for c in checks if not c.ok] == []
    assert min(sleep.delays) >= 0.025  # equal jitter never collapses to zero


@pytest.mark.trio
async def test_backoff_doubles_and_honours_retry_after() -> None:
    fake = FakeAggregator(lambda n: {1: "connect-error", 2: "connect-error", 3: "429"}.get(n))
    sleep = RecordingSleep()
    batch = generator(total=10, batch=10, clients=1).batch(0)
    assert batch is not None
    policy = RetryPolicy(retries=5, base=0.1, cap=10)
    with trio.fail_after(5):
        async with http(fake) as client:
            publisher = Publisher(client, policy, rng=random.Random(1), sleep=sleep)
            delivery = await publisher.publish(batch)
    assert delivery.acked and delivery.attempts == 4
    assert delivery.stored == len(set(batch.key_ids)) == 7  # in-batch re-sends are duplicates
    assert delivery.ambiguous_events == 0  # never reached the server / 429 stores nothing
    assert 0.05 <= sleep.delays[0] <= 0.1
    assert 0.1 <= sleep.delays[1] <= 0.2
    assert sleep.delays[2] >= 1.0  # Retry-After: 1 beats the 0.2..0.4 backoff


@pytest.mark.trio
async def test_gives_up_after_the_retry_limit_and_at_once_on_4xx() -> None:
    batch = generator(total=5, batch=5, clients=1).batch(0)
    assert batch is not None
    with trio.fail_after(5):
        async with http(FakeAggregator(lambda n: "503")) as client:
            publisher = Publisher(client, RetryPolicy(retries=3), sleep=RecordingSleep())
            delivery = await publisher.publish(batch)
        assert not delivery.acked and delivery.attempts == 4
        assert delivery.error == "retries exhausted"

        async def reject(request: httpx.Request) -> httpx.Response:
            return httpx.Response(422, json={"error": "validation"})

        transport = httpx.MockTransport(reject)
        async with httpx.AsyncClient(base_url="http://x", transport=transport) as client:
            delivery = await Publisher(client, RetryPolicy(retries=3)).publish(batch)
    assert not delivery.acked and delivery.attempts == 1
    assert delivery.error is not None and delivery.error.startswith("422")


def test_retry_after_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Sat, 21 Nov 2026 10:00:10 GMT", now=1_795_255_200.0) == 10.0


@pytest.mark.trio
async def test_a_refused_token_stops_at_once_without_retrying() -> None:
    batch = generator(total=5, batch=5, clients=1).batch(0)
    assert batch is not None
    attempts: list[str | None] = []

    async def unauthorized(request: httpx.Request) -> httpx.Response:
        attempts.append(request.headers.get("Authorization"))
        body = {"error": "unauthorized", "message": "/publish needs a token"}
        return httpx.Response(401, json=body)

    transport = httpx.MockTransport(unauthorized)
    with trio.fail_after(5):
        async with httpx.AsyncClient(base_url="http://x", transport=transport) as client:
            publisher = Publisher(client, RetryPolicy(retries=3), sleep=RecordingSleep())
            with pytest.raises(Refused, match="/publish answered 401: /publish needs a token"):
                await publisher.publish(batch)
    assert attempts == [None]  # one attempt: a 401 means "change the request"
