"""The SSE tail (``GET /subscribe``) against the fake aggregator on ``MockTransport``, with SSE
bodies streamed by the test; and the read token the dashboard sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import httpx
import msgspec
import pytest

from aggregator.front.responses import ErrorBody
from aggregator.settings import SettingError
from tests.tui.fake import FakeAggregator, encoded, run
from tests.tui.test_app import NEVER, SIZE, refreshed, started
from tui.__main__ import parse_args
from tui.app.app import DashboardApp
from tui.data.client import AggregatorClient, ServerError, open_http
from tui.data.subscribe import EventStreamDecoder, SubscribeTail
from tui.data.tail import CountHint
from tui.widgets.status import ConnectionStatus
from tui.widgets.tail import EventTail

TIMEOUT = 10
T = TypeVar("T")


class Streams:
    """``GET /subscribe`` over the fake's events: a stream sends every stored event after its
    cursor (``Last-Event-ID`` over ``after``, as the server does), then waits for ``notify``; the
    next ``drops`` streams end after sending what there was, as a server going away would."""

    def __init__(self, fake: FakeAggregator) -> None:
        self.fake = fake
        self.opened: Counted[tuple[str | None, str | None]] = (
            Counted()
        )  # (after, Last-Event-ID) of each stream
        self.status = 200
        self.drops = 0
        self._wake = asyncio.Event()
        self._cuts = 0

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.MockTransport(self.handle), base_url="http://fake:8080"
        )

    def notify(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def cut(self) -> None:
        """Every open stream fails, as when the server is killed."""
        self._cuts += 1
        self.notify()

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/subscribe" or self.fake.down:
            return self.fake.handle(request)
        self.fake.requests.append("/subscribe")
        after, resume = request.url.params.get("after"), request.headers.get("Last-Event-ID")
        self.opened.append((after, resume))
        if self.status != 200:
            return encoded(ErrorBody("unavailable", "no streams now"), self.status)
        drop, self.drops = self.drops > 0, max(0, self.drops - 1)
        body = self._body(request.url.params.get("topic"), int(resume or after or 0), drop)
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=body)

    async def _body(self, topic: str | None, cursor: int, drop: bool) -> AsyncIterator[bytes]:
        yield b"retry: 1000\n: subscribed\n\n"
        cuts = self._cuts
        while True:
            if self._cuts != cuts:
                raise httpx.ReadError("[Errno 104] Connection reset by peer")
            wake = self._wake
            for row in self.fake.events:
                if row.seq > cursor and topic in (None, row.topic):
                    cursor = row.seq
                    yield b"id: %d\ndata: %s\n\n" % (cursor, msgspec.json.encode(row))
            if drop:
                return
            await wake.wait()
            yield b": heartbeat\n\n"


class Counted(Generic[T]):
    """A list whose length can be waited for."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()

    def append(self, item: T) -> None:
        self.items.append(item)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.items) < count:
            await self._changed.wait()


class Sleeps:
    """The backoff's sleep: records the delay; the first ``short`` sleeps only yield, every
    later one lasts until the test ends (a backoff far longer than the test)."""

    def __init__(self, short: int) -> None:
        self.delays: Counted[float] = Counted()
        self.short = short

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays.items) > self.short:
            await asyncio.Event().wait()
        await asyncio.sleep(0)  # sleep-ok: a zero-length yield to the loop, not a wait


class NoWait:
    """The backoff's sleep: records the delay, yields once, does not wait."""

    def __init__(self) -> None:
        self.delays: Counted[float] = Counted()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)  # sleep-ok: a zero-length yield to the loop, not a wait


def app_on(http: httpx.AsyncClient) -> DashboardApp:
    return DashboardApp(http=http, interval=NEVER, tail_size=50)


def count_of(fake: FakeAggregator) -> CountHint:
    return fake.count


def test_decoder_reads_messages_and_skips_comments() -> None:
    decoder = EventStreamDecoder()
    lines = ["retry: 1000", ": subscribed", "", "id: 7", "data: {", 'data: "seq": 7}', ""]
    events = [decoder.feed(line) for line in lines]
    assert [e.seq if e else None for e in events] == [None] * 6 + [7]


def test_stream_resumes_with_last_event_id_and_never_repeats() -> None:
    async def scenario() -> None:
        fake = FakeAggregator()
        fake.publish("orders", 3)
        streams = Streams(fake)
        streams.drops = 1
        sleep = NoWait()
        async with streams.client() as http:
            tail = SubscribeTail(AggregatorClient(http), 10, sleep=sleep)
            first = await tail.poll(count_of(fake))
            assert ([e.seq for e in first.events], first.reset) == ([1, 2, 3], True)
            fake.publish("orders", 2)  # the first stream sends 4 and 5, then ends
            async with asyncio.timeout(TIMEOUT):
                await tail.wait_past(5)
                await streams.opened.wait_for(2)  # reopened, and waiting for more
            fake.publish("orders", 1)
            streams.notify()
            async with asyncio.timeout(TIMEOUT):
                await tail.wait_past(6)
            second = await tail.poll(count_of(fake))
            assert ([e.seq for e in second.events], second.reset) == ([4, 5, 6], False)
            assert streams.opened.items == [("3", "3"), ("5", "5")]
            assert sleep.delays.items == [1.0]  # one reconnect, after the backoff's first delay
            assert fake.requests.count("/events") == 1  # the first page only
            await tail.aclose()

    run(scenario())


def test_no_subscribe_falls_back_to_polling_events() -> None:
    async def scenario() -> None:
        fake = FakeAggregator()  # answers 404 to /subscribe, as a server before issue 6
        fake.publish("orders", 2)
        async with fake.client() as http:
            tail = SubscribeTail(AggregatorClient(http), 10)
            first = await tail.poll(count_of(fake))
            assert [e.seq for e in first.events] == [1, 2]
            assert tail.fallback and not tail.live
            fake.publish("auth", 2)
            second = await tail.poll(count_of(fake))
            assert [e.seq for e in second.events] == [3, 4]
            assert fake.requests.count("/subscribe") == 1
            assert fake.requests.count("/events") == 2
            await tail.aclose()

    run(scenario())


def test_a_failing_stream_is_reported_and_retried_with_backoff() -> None:
    async def scenario() -> None:
        fake = FakeAggregator()
        fake.publish("orders", 1)
        streams = Streams(fake)
        streams.status = 503
        sleep = NoWait()
        async with streams.client() as http:
            tail = SubscribeTail(AggregatorClient(http), 10, sleep=sleep)
            await tail.poll(count_of(fake))
            async with asyncio.timeout(TIMEOUT):
                await sleep.delays.wait_for(3)
            assert sleep.delays.items[:3] == [1.0, 2.0, 4.0]
            with pytest.raises(ServerError, match="503"):
                await tail.poll(count_of(fake))
            streams.status = 200
            fake.publish("orders", 1)
            async with asyncio.timeout(TIMEOUT):
                await tail.wait_past(2)
            update = await tail.poll(count_of(fake))
            assert [e.seq for e in update.events] == [2]
            assert {resume for _, resume in streams.opened.items} == {"1"}
            await tail.aclose()

    run(scenario())


def test_buffer_keeps_the_newest_while_nobody_polls() -> None:
    async def scenario() -> None:
        fake = FakeAggregator()
        streams = Streams(fake)
        async with streams.client() as http:
            tail = SubscribeTail(AggregatorClient(http), 3)
            assert (await tail.poll(count_of(fake))).events == []
            fake.publish("orders", 5)  # e.g. while the dashboard is paused
            streams.notify()
            async with asyncio.timeout(TIMEOUT):
                await tail.wait_past(5)
            update = await tail.poll(count_of(fake))
            assert ([e.seq for e in update.events], update.reset) == ([3, 4, 5], True)
            await tail.aclose()

    run(scenario())


def test_dashboard_tail_follows_the_stream_and_restarts_it_on_a_topic() -> None:
    async def scenario() -> None:
        fake = FakeAggregator()
        fake.publish("orders", 3)
        fake.publish("auth", 2)
        streams = Streams(fake)
        async with streams.client() as http, app_on(http).run_test(size=SIZE) as pilot:
            app = pilot.app
            assert isinstance(app, DashboardApp)
            await started(pilot)
            tail = app.dashboard.query_one(EventTail)
            assert tail.seqs == [1, 2, 3, 4, 5]
            assert app.tail.live
            fake.publish("auth", 2)
            streams.notify()
            async with asyncio.timeout(TIMEOUT):
                await app.tail.wait_past(7)
            events_before = fake.requests.count("/events")
            await refreshed(pilot)
            assert tail.seqs == [1, 2, 3, 4, 5, 6, 7]
            assert fake.requests.count("/events") == events_before  # no polling
            app.tail_topic("orders")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert tail.seqs == [1, 2, 3]
            assert streams.opened.items[-1] == ("3", "3")  # from the newest page of the topic
            fake.publish("orders", 1)
            streams.notify()
            async with asyncio.timeout(TIMEOUT):
                await app.tail.wait_past(8)
            await refreshed(pilot)
            assert tail.seqs == [1, 2, 3, 8]

    run(scenario())


def test_the_tail_border_follows_the_server_down_and_back() -> None:
    async def scenario() -> None:
        fake = FakeAggregator()
        fake.publish("orders", 2)
        streams = Streams(fake)
        sleep = Sleeps(short=1)
        app = DashboardApp(http=streams.client(), interval=NEVER, sleep=sleep)
        async with app.http, app.run_test(size=SIZE) as pilot:
            await started(pilot)
            tail = app.dashboard.query_one(EventTail)
            assert tail.border_subtitle == "p pause/resume · a all topics"

            fake.down = True
            streams.cut()  # the stream fails, its first retry is refused, the second waits
            async with asyncio.timeout(TIMEOUT):
                await sleep.delays.wait_for(2)
            assert isinstance(app.tail.error, httpx.ConnectError)
            await refreshed(pilot)
            assert "unreachable" in app.dashboard.query_one(ConnectionStatus).text
            assert tail.border_subtitle == "stopped: the server does not answer"

            fake.down = False
            fake.publish("orders", 1)
            await refreshed(pilot)  # reopens the stream now, not after its backoff
            assert app.dashboard.query_one(ConnectionStatus).text.startswith("● connected")
            assert tail.border_subtitle == "p pause/resume · a all topics"
            assert streams.opened.items[-1] == ("2", "2")
            async with asyncio.timeout(TIMEOUT):
                await app.tail.wait_past(3)
            await refreshed(pilot)
            assert tail.seqs == [1, 2, 3]
            assert sleep.delays.items == [1.0, 2.0]

    run(scenario())


def test_the_read_token_is_sent_on_every_request() -> None:
    seen: list[tuple[str, str | None]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("Authorization")))
        if request.url.path == "/subscribe":
            return httpx.Response(200, content=b": subscribed\n\n")
        return httpx.Response(200, json={"status": "ok"})

    async def scenario() -> None:
        transport = httpx.MockTransport(handle)
        async with open_http("http://fake:8080", token="s3cret", transport=transport) as http:
            client = AggregatorClient(http)
            await client.health()
            response = await client.subscribe(topic=None, after=0)
            assert response is not None
            await response.aclose()
        async with open_http("http://fake:8080", transport=transport) as http:
            await AggregatorClient(http).health()

    run(scenario())
    assert seen == [
        ("/health", "Bearer s3cret"),
        ("/subscribe", "Bearer s3cret"),
        ("/health", None),
    ]


def test_token_from_the_flag_or_the_environment() -> None:
    assert parse_args([], {}).token == ""
    assert parse_args([], {"AGGREGATOR_TUI_TOKEN": "t1"}).token == "t1"
    assert parse_args(["--token", "t2"], {"AGGREGATOR_TUI_TOKEN": "t1"}).token == "t2"


@pytest.mark.parametrize(
    ("argv", "env", "origin"),
    [(["--url", "localhost:8080"], {}, "--url"), ([], {"AGGREGATOR_URL": "foo"}, "AGGREGATOR_URL")],
)
def test_a_url_without_its_scheme_is_refused_up_front(
    argv: list[str], env: dict[str, str], origin: str
) -> None:
    # It used to be taken, and every request then failed with httpx's UnsupportedProtocol.
    with pytest.raises(SettingError, match=f"^{origin} must be an http:// or https:// URL"):
        parse_args(argv, env)
    assert parse_args(["--url", "https://logs.example"], {}).url == "https://logs.example"
