"""``ReadRoute`` answers ``GET /events`` and ``GET /stats`` without Quart, and answers exactly as
the Quart routes do: status, headers and body, byte for byte, for hundreds of query strings
(good, bad, repeated, percent-escaped, not UTF-8) and for every way a read can fail."""

from __future__ import annotations

import random
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from aggregator.actors.hub import Hub
from aggregator.actors.monitor import WriterMonitor
from aggregator.actors.readers import open_reader_pool
from aggregator.config import Config
from aggregator.front.app import Front
from aggregator.front.metrics import Metrics
from aggregator.front.readroute import ReadRoute, query_args
from aggregator.incidents import Incidents
from aggregator.messages import EventRecord, Submission
from aggregator.service import create_routes
from aggregator.store import Counters, StoreDamaged, StoreUnavailable
from aggregator.store.sqlite import SQLiteStore
from aggregator.store.sqlite_reader import SQLiteReader
from tests.conftest import open_server

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]

# Pieces a query string is drawn from: every parameter of /events, good and bad values of each,
# repeats, blanks, escapes that are not UTF-8, '+' for a space.
PIECES = [
    "topic=t1", "topic=t2", "topic=", "topic=%E9", "topic=t%31", "topic=a+b", "%74opic=t1",
    "source=s1", "source=s%FF", "after=5", "after=0", "after=-1", "after=x", "after=%205",
    "after=9223372036854775808", "before=40", "before=0", "limit=1", "limit=7", "limit=0",
    "limit=1001", "limit=abc", "limit=%31%30", "order=desc", "order=asc", "order=up",
    "offset=3", "offset=10001", "offset=-2", "since=2026-11-21T09:00:00Z", "since=bad",
    "until=2026-11-21T11:00:00%2B01:00", "until=2026-02-30T00:00:00Z", "q=hello", "q=",
    "=", "&", "topic", "%FF=1", "limit", "after=1e3", "since=0001-01-01T00:00:00%2B01:00",
]  # fmt: skip


def record(i: int, topic: str | None = None) -> EventRecord:
    return EventRecord(
        topic or f"t{i % 3}", f"e{i}", "2026-11-21T10:00:00Z", f"s{i % 2}", f'{{"n":{i}}}'
    )


def targets() -> list[str]:
    draw = random.Random(15)
    made = [""] + [
        "&".join(draw.choices(PIECES, k=draw.randint(1, 5))) for _ in range(400)
    ]  # and raw printable ASCII, which h11 lets through in a target
    alphabet = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "#?")
    made += ["".join(draw.choices(alphabet, k=draw.randint(1, 30))) for _ in range(100)]
    return made


class Failing:
    """A reader whose every read raises ``error``: the ways a read fails, told apart."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def find(self, query: Any) -> Any:
        raise self.error

    def counters(self) -> Any:
        raise self.error

    def close(self) -> None:
        pass


@asynccontextmanager
async def apps(open_reader: Callable[[], Any]) -> AsyncIterator[tuple[Any, Any, list[str]]]:
    """(``ReadRoute`` in front of the Quart routes, the Quart routes alone, the paths that got
    past ``ReadRoute``) over readers from ``open_reader``."""
    ingest, _ = trio.open_memory_channel[Submission](1)
    async with open_reader_pool(open_reader, 2) as readers:
        front = Front(
            ingest,
            readers,
            WriterMonitor(),
            1_000_000,
            1,
            0.0,
            Hub(buffer_events=1),
            Metrics(),
            1,
            1,
            Incidents(),
        )
        quart = create_routes(front, Config())
        passed: list[str] = []

        async def behind(scope: dict[str, Any], receive: Any, send: Any) -> None:
            passed.append(f"{scope['method']} {scope['path']}")
            await quart(scope, receive, send)

        timeout = quart.config["RESPONSE_TIMEOUT"]
        yield ReadRoute(front, behind, response_timeout=timeout), quart, passed


def scope_of(target: str, method: str = "GET", body: bytes = b"") -> dict[str, Any]:
    """An HTTP/1.1 request's ASGI scope, as hypercorn gives it."""
    path, _, query = target.partition("?")
    headers = [(b"host", b"x")]
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "http_version": "1.1",
        "asgi": {"spec_version": "2.1", "version": "3.0"},
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
        "extensions": {},
    }


async def call(
    app: Any, target: str, method: str = "GET", body: bytes = b"", *, gone: bool = False
) -> Answer:
    """``app``'s answer to ``target``. ``gone``: the client went away once its request was sent
    (the server's ``http.disconnect``); an app that sends nothing answers (0, [], b"")."""
    scope = scope_of(target, method, body)
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        if gone:
            return {"type": "http.disconnect"}
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if not sent:
        return 0, [], b""
    start = sent[0]
    # In the order sent: a client sees the same bytes from either route.
    headers_out = [(name.lower(), value) for name, value in start["headers"]]
    return start["status"], headers_out, b"".join(m.get("body", b"") for m in sent[1:])


def without_uptime(answer: Answer) -> Answer:
    status, headers, body = answer
    fields = msgspec.json.decode(body)
    fields.pop("uptime")
    return status, [h for h in headers if h[0] != b"content-length"], msgspec.json.encode(fields)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    db = tmp_path / "store.sqlite3"
    writer = SQLiteStore(db)
    # and a topic that is what werkzeug leaves of an escape that is not UTF-8: "topic=%E9"
    writer.commit([[record(i) for i in range(60)], [record(i, "%E9") for i in range(60, 70)]])
    writer.close()
    return db


@pytest.mark.trio
async def test_every_query_string_is_answered_as_quart_answers_it(store: Path) -> None:
    answers: dict[int, int] = {}
    async with apps(partial(SQLiteReader, store)) as (bare, quart, passed):
        for query in targets():
            target = f"/events?{query}"
            ours = await call(bare, target)
            assert ours == await call(quart, target), target
            answers[ours[0]] = answers.get(ours[0], 0) + 1
        assert passed == []  # every one of them answered by ReadRoute, none by Quart
        assert without_uptime(await call(bare, "/stats")) == without_uptime(
            await call(quart, "/stats")
        )
        assert passed == []
    # The corpus reaches pages with and without a next page, and every kind of refusal.
    assert set(answers) == {200, 400, 422}, answers


@pytest.mark.trio
async def test_a_next_page_link_is_the_same(store: Path) -> None:
    async with apps(partial(SQLiteReader, store)) as (bare, quart, _):
        target = "/events?topic=t1&topic=t2&limit=5&order=desc&since=2026-11-21T09:00:00Z"
        status, headers, _ = await call(bare, target)
        assert status == 200
        assert (b"link", b'</events?topic=t1&since=2026-11-21T09%3A00%3A00Z&order=desc'
                          b'&before=47&limit=5>; rel="next"') in headers  # fmt: skip
        assert (status, headers) == (await call(quart, target))[:2]


@pytest.mark.trio
async def test_what_is_not_a_bodyless_get_of_the_two_paths_goes_to_quart(store: Path) -> None:
    async with apps(partial(SQLiteReader, store)) as (bare, quart, passed):
        for method, target, body in [
            ("HEAD", "/events", b""),
            ("POST", "/events", b""),
            ("GET", "/events", b"x"),
            ("GET", "/events/", b""),
            ("GET", "/topics", b""),
            ("OPTIONS", "/stats", b""),
        ]:
            ours = await call(bare, target, method, body)
            assert ours == await call(quart, target, method, body)
        assert passed == [
            "HEAD /events",
            "POST /events",
            "GET /events",
            "GET /events/",
            "GET /topics",
            "OPTIONS /stats",
        ]
        assert (await call(bare, "/events", "POST"))[0] == 405


@pytest.mark.trio
async def test_headers_come_in_the_order_quart_sends_them(store: Path) -> None:
    async with apps(partial(SQLiteReader, store)) as (bare, quart, _):
        ours = await call(bare, "/events?limit=2")
        assert [name for name, _ in ours[1]] == [b"link", b"content-type", b"content-length"]
        assert ours == await call(quart, "/events?limit=2")
    async with apps(lambda: Failing(StoreUnavailable("disk I/O error"))) as (bare, quart, _):
        ours = await call(bare, "/stats")
        assert [name for name, _ in ours[1]] == [b"retry-after", b"content-type", b"content-length"]
        assert ours == await call(quart, "/stats")


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (StoreUnavailable("disk I/O error"), 503, b"unavailable"),
        (StoreDamaged("database disk image is malformed", "events"), 503, b"store_damaged"),
    ],
)
@pytest.mark.trio
async def test_a_store_that_cannot_answer_is_answered_as_quart_answers_it(
    error: Exception, status: int, kind: bytes
) -> None:
    async with apps(lambda: Failing(error)) as (bare, quart, _):
        for target in ("/events?topic=t1", "/stats"):
            ours = await call(bare, target)
            assert ours == await call(quart, target)
            assert ours[0] == status
            assert b'"error":"%s"' % kind in ours[2]


@pytest.mark.trio
async def test_a_bug_in_a_read_is_a_500_with_an_incident_as_quart_answers_it() -> None:
    async with apps(lambda: Failing(ZeroDivisionError("a bug"))) as (bare, quart, _):
        for target in ("/events", "/stats"):
            ours, theirs = await call(bare, target), await call(quart, target)
            assert ours[0] == theirs[0] == 500
            assert ours[1] == theirs[1]
            assert ours[2] != theirs[2]  # each its own incident, named by its request id
            mask = partial(re.sub, rb"request id [0-9a-f]+", b"request id X")
            assert mask(ours[2]) == mask(theirs[2])
            assert b"request id X" in mask(ours[2])


@pytest.mark.trio
async def test_a_store_whose_tables_vanished_is_a_503_as_quart_answers_it(store: Path) -> None:
    async with apps(partial(SQLiteReader, store)) as (bare, quart, _):
        other = sqlite3.connect(store, isolation_level=None)
        other.execute("DROP TABLE events")
        other.close()
        ours = await call(bare, "/events")
        assert ours == await call(quart, "/events")
        assert ours[0] == 503


def test_query_args_keep_the_first_of_repeated_names_and_escapes_that_are_not_utf8() -> None:
    assert query_args(b"topic=a&topic=b&limit=%31&x") == {"topic": "a", "limit": "1", "x": ""}
    assert query_args(b"topic=%FF%E9+z") == {"topic": "%FF%E9 z"}


class Gated:
    """A reader whose reads wait for ``gate``; each read tells ``started`` when it starts."""

    def __init__(self, gate: threading.Event, started: trio.MemorySendChannel[str]) -> None:
        self.gate, self.started = gate, started

    def find(self, query: Any) -> Any:
        trio.from_thread.run_sync(self.started.send_nowait, "read")
        self.gate.wait()
        return []

    def counters(self) -> Any:
        self.find(None)
        return Counters(0, 0, 0, [])

    def close(self) -> None:
        pass


@pytest.mark.parametrize("target", ["/events?topic=t1", "/stats"])
@pytest.mark.parametrize("which", ["quart", "bare"])
@pytest.mark.trio
async def test_a_read_whose_client_went_away_is_dropped_as_quart_drops_it(
    target: str, which: str
) -> None:
    """A client that sends a read and goes away (the server's ``http.disconnect``) while its
    read waits for a reader: Quart cancels the request, and the read is never made. Not
    cancelled, 150 such page requests cost the server 6.2 s of CPU instead of 1.5, and a small
    read sent after them waited 4.8 s instead of 0.09."""
    gate = threading.Event()
    started, reads = trio.open_memory_channel[str](10)
    async with apps(lambda: Gated(gate, started)) as (bare, quart, _):
        app = bare if which == "bare" else quart
        answers: list[Answer] = []

        async def answer(gone: bool) -> None:
            answers.append(await call(app, target, gone=gone))

        async with trio.open_nursery() as nursery:
            try:
                for _ in range(2):  # both readers busy
                    nursery.start_soon(answer, False)
                    await reads.receive()
                nursery.start_soon(answer, True)
                await trio.testing.wait_all_tasks_blocked()
                assert answers == [(0, [], b"")]  # over at once, nothing sent
            finally:
                gate.set()  # the readers' threads cannot be cancelled: they end here
        assert [status for status, _, _ in answers] == [0, 200, 200]
        assert reads.statistics().current_buffer_used == 0  # the dropped read was never made


@pytest.mark.parametrize("target", ["/events?limit=2", "/stats"])
@pytest.mark.trio
async def test_an_answer_the_client_does_not_take_is_given_up_as_quart_gives_it_up(
    store: Path, target: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A client that takes its answer slower than Quart's ``RESPONSE_TIMEOUT`` (60 s) in all,
    yet fast enough for the send timeout: Quart gives the answer up then, and the connection
    closes. Not given up, a client reading 64 KiB a second held a 20 MB page (and its
    connection) for the 5 minutes it took."""
    async with apps(partial(SQLiteReader, store)) as (bare, quart, _):
        timeout = quart.config["RESPONSE_TIMEOUT"]
        for app in (quart, bare):
            sent: list[str] = []

            async def slow(message: dict[str, Any], sent: list[str] = sent) -> None:
                sent.append(message["type"])
                if message.get("body"):
                    await trio.sleep(10 * timeout)  # sleep-ok: autojump clock; a slow client

            begun = trio.current_time()
            await app(scope_of(target), partial(trio.sleep_forever), slow)
            assert trio.current_time() - begun == timeout, app
            assert sent == ["http.response.start", "http.response.body"], app


@pytest.mark.parametrize("target", [b"/events", b"/stats"])
@pytest.mark.trio
async def test_connection_close_ends_the_connection_with_the_answer(
    tmp_path: Path, target: bytes
) -> None:
    """Through the server's own front: the answer's end closes a ``Connection: close``
    connection at once. (hypercorn puts the request's ``http.disconnect`` as the answer ends;
    a route that cancelled its send on it cut the close, and the connection stayed open until
    the keep-alive timeout.)"""
    async with open_server(tmp_path, keep_alive_seconds=60) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.running.port)
        head = b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target
        await stream.send_all(head)
        received = b""
        with trio.fail_after(10):  # well before the keep-alive timeout
            while data := await stream.receive_some():
                received += data
        assert received.startswith(b"HTTP/1.1 200 ")
        await stream.aclose()
