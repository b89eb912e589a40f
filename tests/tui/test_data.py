"""The data layer without Textual: parsing, rates, backoff, the tail cursor, the poller."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.tui.fake import FakeAggregator, run
from tui.data.backoff import Backoff
from tui.data.client import AggregatorClient, ServerError
from tui.data.models import ProtocolError, Stats, TopicRow, parse_stats, parse_topics
from tui.data.poller import Poller, State
from tui.data.rates import RateMeter
from tui.data.tail import PollingTail


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stats(received: int, unique: int, uptime: float) -> Stats:
    return Stats(received, unique, received - unique, ("t",), uptime)


def test_rates_are_deltas_over_server_uptime() -> None:
    meter = RateMeter(history=3)
    assert meter.observe(stats(100, 80, 10.0)) is None
    rates = meter.observe(stats(160, 120, 12.0))
    assert rates is not None
    assert (rates.received, rates.unique) == (30.0, 20.0)
    meter.observe(stats(160, 120, 13.0))
    meter.observe(stats(260, 200, 14.0))
    rates = meter.observe(stats(270, 205, 15.0))
    assert rates is not None
    assert rates.history == (0.0, 100.0, 10.0)  # the oldest fell out


def test_rates_restart_when_the_server_restarts() -> None:
    meter = RateMeter()
    meter.observe(stats(100, 80, 50.0))
    assert meter.observe(stats(160, 120, 51.0)) is not None
    assert meter.observe(stats(160, 120, 0.5)) is None  # uptime went back: a new process
    assert meter.rates is None
    rates = meter.observe(stats(170, 125, 1.5))
    assert rates is not None
    assert rates.received == 10.0
    assert rates.history == (10.0,)


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=5.0)
    assert backoff.ready(0.0)
    delays = [backoff.failed(0.0) for _ in range(5)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert not backoff.ready(4.9)
    assert backoff.retry_in(3.0) == 2.0
    assert backoff.ready(5.0)
    backoff.succeeded()
    assert backoff.ready(0.0)
    assert backoff.failed(10.0) == 1.0


def test_parse_rejects_what_the_contract_does_not_allow() -> None:
    with pytest.raises(ProtocolError):
        parse_stats({"received": 1})
    with pytest.raises(ProtocolError):
        parse_stats([])
    with pytest.raises(ProtocolError, match="unique_processed"):
        parse_topics([{"topic": "a", "unique": 3, "duplicate_dropped": 1, "last_seq": 4}])
    with pytest.raises(ProtocolError, match="array"):
        parse_topics({"topics": []})


def test_tail_starts_at_the_newest_page_then_follows_the_cursor() -> None:
    fake = FakeAggregator()
    fake.publish("a", 25)
    fake.publish("b", 5)

    async def scenario() -> None:
        async with fake.client() as http:
            tail = PollingTail(AggregatorClient(http), size=10)
            first = await tail.poll(lambda topic: 30 if topic is None else None)
            assert [e.seq for e in first.events] == list(range(21, 31))
            assert first.reset
            fake.publish("a", 3)
            update = await tail.poll(lambda topic: 33)
            assert [e.seq for e in update.events] == [31, 32, 33]
            assert not update.reset
            fake.publish("a", 15)  # more than a page: skip straight to the newest page
            skipped = await tail.poll(lambda topic: 48)
            assert [e.seq for e in skipped.events] == list(range(39, 49))
            fake.publish("a", 30)  # the count lags behind the store: follow, then catch up
            lagging = await tail.poll(lambda topic: 58)
            assert [e.seq for e in lagging.events] == list(range(49, 59))
            caught_up = await tail.poll(lambda topic: 78)
            assert [e.seq for e in caught_up.events] == list(range(69, 79))
            fake.events.clear()  # a new, empty store behind the same URL
            fake.publish("a", 2)
            again = await tail.poll(lambda topic: 2)
            assert again.reset
            assert [e.seq for e in again.events] == [1, 2]

    run(scenario())


def test_tail_of_a_topic_without_counts_follows_from_the_newest_seen() -> None:
    fake = FakeAggregator()
    fake.publish("a", 5)
    fake.publish("b", 5)

    async def scenario() -> None:
        async with fake.client() as http:
            tail = PollingTail(AggregatorClient(http), size=10)
            await tail.poll(lambda topic: 10 if topic is None else None)
            tail.select("a")
            fresh = await tail.poll(lambda topic: 10 if topic is None else None)
            assert fresh.reset and fresh.events == []
            fake.publish("a", 2)
            fake.publish("b", 2)
            update = await tail.poll(lambda topic: None)
            assert [(e.topic, e.seq) for e in update.events] == [("a", 11), ("a", 12)]

    run(scenario())


def test_poller_falls_back_to_stats_topic_names_when_topics_is_404() -> None:
    fake = FakeAggregator(has_topics=False)
    fake.publish("b", 2)
    fake.publish("a", 3)

    async def scenario() -> None:
        async with fake.client() as http:
            poller = Poller(AggregatorClient(http), interval=1.0, clock=Clock())
            snapshot = await poller.refresh()
            assert snapshot is not None
            assert not snapshot.topics_exact
            assert snapshot.topics == (TopicRow("a", None, None, 5), TopicRow("b", None, None, 2))

    run(scenario())


def test_poller_sends_one_request_per_panel_and_never_overlaps() -> None:
    fake = FakeAggregator()
    fake.publish("a", 1)

    async def scenario() -> None:
        entered, opened = asyncio.Event(), asyncio.Event()

        async def slow(request: httpx.Request) -> httpx.Response:
            entered.set()
            await opened.wait()
            return fake.handle(request)

        transport = httpx.MockTransport(slow)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as http:
            poller = Poller(AggregatorClient(http), interval=1.0, clock=Clock())
            first = asyncio.create_task(poller.refresh())
            await entered.wait()  # the first round is out, waiting on the server
            assert poller.busy and not poller.due()
            assert await poller.refresh() is None
            opened.set()
            assert await first is not None
            assert sorted(fake.requests) == ["/events", "/health", "/stats", "/topics"]
            assert poller.due()

    run(scenario())


def test_poller_reports_unreachable_and_backs_off_then_recovers() -> None:
    fake = FakeAggregator(down=True)
    clock = Clock()

    async def scenario() -> None:
        async with fake.client() as http:
            poller = Poller(AggregatorClient(http), interval=1.0, clock=clock)
            for expected_wait in (1.0, 2.0, 4.0):
                snapshot = await poller.refresh()
                assert snapshot is not None
                assert snapshot.connection.state is State.UNREACHABLE
                assert snapshot.connection.retry_in == expected_wait
                assert "Connection refused" in (snapshot.connection.detail or "")
                assert not poller.due()
                clock.now += expected_wait
                assert poller.due()
            fake.down = False
            snapshot = await poller.refresh()
            assert snapshot is not None
            assert snapshot.connection.state is State.CONNECTED
            assert snapshot.connection.retry_in is None

    run(scenario())


def test_client_turns_error_statuses_into_server_errors() -> None:
    fake = FakeAggregator(error_status=500)

    async def scenario() -> None:
        async with fake.client() as http:
            with pytest.raises(ServerError, match="HTTP 500 the store does not answer"):
                await AggregatorClient(http).stats()

    run(scenario())
