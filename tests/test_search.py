"""Search over stored events (issue 16): the filters of ``GET /events`` on both stores, through
a real server; the same results on SQLite and PostgreSQL for one query set; no 5xx for any ``q``.

The store-level parts (the index kept with retention, built in the background, the migration,
the query plans) are in ``tests/test_search_store.py``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.actors.readers import open_reader_pool
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from tests.conftest import Server, open_server
from tests.sse import open_stream
from tests.support import running_server
from tests.test_api import next_link

EVENTS = [
    # topic, event_id, timestamp, source, payload
    ("auth", "a1", "2026-11-30T10:00:00Z", "auth-service", {"user": "u123", "msg": "login failed"}),
    ("auth", "a2", "2026-11-30T10:00:00.500000Z", "auth-service", {"user": "u124", "msg": "ok"}),
    ("auth", "a3", "2026-11-30T10:05:00Z", "web", {"user": "u123", "msg": "Login OK from Zürich"}),
    ("pay", "p1", "2026-11-30T10:06:00Z", "pay-service", {"msg": "payment failed", "amount": 12}),
    ("pay", "p2", "2026-11-30T10:10:00Z", "pay-service", {"msg": "failed login\nretry", "n": [1]}),
    ("pay", "order-77", "2026-11-30T10:11:00Z", "auth-service", {"note": "user_id=u999 café"}),
]


def batch() -> list[dict[str, Any]]:
    return [
        {"topic": t, "event_id": e, "timestamp": ts, "source": s, "payload": p}
        for t, e, ts, s, p in EVENTS
    ]


@pytest.fixture
async def searching(tmp_path: Path, backend: dict[str, Any]) -> AsyncIterator[Server]:
    async with open_server(tmp_path / "data", search=True, **backend) as server:
        response = await server.publish(batch())
        assert response.status_code == 200, response.text
        yield server


async def ids(server: Server, **params: Any) -> list[str]:
    response = await server.client.get("/events", params=params)
    assert response.status_code == 200, response.text
    return [event["event_id"] for event in response.json()]


async def refused(server: Server, status: int, **params: Any) -> dict[str, Any]:
    response = await server.client.get("/events", params=params)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


# The filters, one by one and combined -------------------------------------------------------


@pytest.mark.trio
async def test_source_filter_is_exact_and_combines_with_topic(searching: Server) -> None:
    assert await ids(searching, source="auth-service") == ["a1", "a2", "order-77"]
    assert await ids(searching, source="auth-service", topic="auth") == ["a1", "a2"]
    assert await ids(searching, source="auth") == []


@pytest.mark.trio
async def test_since_is_inclusive_until_exclusive_to_the_microsecond(searching: Server) -> None:
    # 10:00:00.5 sorts before 10:00:00 as stored text; the filter compares times.
    assert await ids(searching, since="2026-11-30T10:00:00.5Z") == [
        "a2", "a3", "p1", "p2", "order-77"
    ]  # fmt: skip
    assert await ids(searching, since="2026-11-30T10:00:00.500001Z", topic="auth") == ["a3"]
    assert await ids(searching, until="2026-11-30T10:00:00.5Z") == ["a1"]
    assert await ids(searching, until="2026-11-30T10:00:00.500001Z") == ["a1", "a2"]
    # An offset is converted to UTC; no offset means UTC.
    window = {"since": "2026-11-30T11:05:00+01:00", "until": "2026-11-30 10:10:00"}
    assert await ids(searching, **window) == ["a3", "p1"]
    assert await ids(searching, **window, source="pay-service") == ["p1"]


@pytest.mark.trio
async def test_word_phrase_prefix_or_and_exclusion(searching: Server) -> None:
    assert await ids(searching, q="failed") == ["a1", "p1", "p2"]
    assert await ids(searching, q="FAILED login") == ["a1", "p2"]  # AND, any case, any order
    assert await ids(searching, q='"login failed"') == ["a1"]  # the words in a row
    assert await ids(searching, q='"failed login"') == ["p2"]
    assert await ids(searching, q="u12*") == ["a1", "a2", "a3"]  # a prefix
    assert await ids(searching, q='"user u12"*') == ["a1", "a2", "a3"]  # phrase, prefix last
    assert await ids(searching, q="failed -login") == ["p1"]
    assert await ids(searching, q="payment OR zurich") == ["a3", "p1"]  # accents removed
    assert await ids(searching, q="CAFÉ") == ["order-77"]
    assert await ids(searching, q="retry") == ["p2"]  # a JSON escape (\n) separates words
    assert await ids(searching, q="order-77") == ["order-77"]  # the event_id is searched
    assert await ids(searching, q="u999") == ["order-77"]  # user_id=u999: _ and = separate
    assert await ids(searching, q="amount 12") == ["p1"]  # keys and numbers are words


@pytest.mark.trio
async def test_q_combines_with_every_other_filter(searching: Server) -> None:
    assert await ids(searching, q="failed", topic="pay") == ["p1", "p2"]
    assert await ids(searching, q="login", source="auth-service") == ["a1"]
    assert await ids(searching, q="login", since="2026-11-30T10:01:00Z") == ["a3", "p2"]
    assert await ids(searching, q="login", order="desc") == ["p2", "a3", "a1"]
    assert await ids(searching, q="failed", order="desc", before=5) == ["p1", "a1"]


@pytest.mark.trio
async def test_newest_first_pages_back_with_before_and_link(searching: Server) -> None:
    response = await searching.client.get("/events", params={"order": "desc", "limit": 2})
    seen = [e["event_id"] for e in response.json()]
    link = next_link(response)
    assert link == "/events?order=desc&before=5&limit=2"
    while link is not None:
        response = await searching.client.get(link)
        seen += [e["event_id"] for e in response.json()]
        link = next_link(response)
    assert seen == ["order-77", "p2", "p1", "a3", "a2", "a1"]


@pytest.mark.trio
async def test_paging_a_filtered_result_by_link_keeps_every_filter(searching: Server) -> None:
    params = {"q": "u12* OR failed", "source": "auth-service", "since": "2026-11-30T10:00:00Z"}
    response = await searching.client.get("/events", params={**params, "limit": 1})
    seen = [e["event_id"] for e in response.json()]
    link = next_link(response)
    assert link is not None
    for name in ("q=u12%2A+OR+failed", "source=auth-service", "since=2026-11-30T10%3A00%3A00Z"):
        assert name in link
    while link is not None:
        response = await searching.client.get(link)
        seen += [e["event_id"] for e in response.json()]
        link = next_link(response)
    assert seen == ["a1", "a2"]
    # Newest first, with both cursors: the range between them.
    both = {**params, "order": "desc", "after": 1, "limit": 1}
    response = await searching.client.get("/events", params=both)
    assert [e["event_id"] for e in response.json()] == ["a2"]
    assert next_link(response) is None


@pytest.mark.trio
async def test_an_event_committed_just_now_is_found_at_once(searching: Server) -> None:
    for n in range(5):
        word = f"fresh{n}word"
        event = {"topic": "t", "event_id": f"x{n}", "timestamp": "2026-11-30T11:00:00Z",
                 "source": "s", "payload": {"m": word}}  # fmt: skip
        assert (await searching.publish(event)).status_code == 200
        assert await ids(searching, q=word) == [f"x{n}"]


# Refusals ----------------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"since": "yesterday"}, "since", "RFC 3339"),
        ({"until": "2026-11-30"}, "until", "RFC 3339"),
        ({"since": "2026-11-30T10:00:00 01:00"}, "since", "%2B"),
        ({"until": "2026-02-30T10:00:00Z"}, "until", "RFC 3339"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since", "years 1 to 9999"),
        ({"until": "9999-12-31T23:59:59-23:59"}, "until", "years 1 to 9999"),
        ({"order": "newest"}, "order", "desc"),
        ({"before": "0"}, "before", "at least 1"),
        ({"q": '"unclosed'}, "q", "unclosed"),
        ({"q": "   "}, "q", "no words"),
        ({"q": "-only -excluded"}, "q", "excluded"),
        ({"q": "a OR"}, "q", "ends with OR"),
        ({"q": "OR a"}, "q", "OR without"),
        ({"q": "x" * 600}, "q", "512"),
        ({"q": " ".join(f"w{n}" for n in range(17))}, "q", "16 terms"),
        ({"q": 'a"b'}, "q", '"'),
    ],
)
async def test_a_bad_filter_is_a_422_naming_it(
    searching: Server, params: dict[str, str], field: str, says: str
) -> None:
    body = await refused(searching, 422, **params)
    assert body["error"] == "validation"
    assert body["details"][0]["field"] == field
    assert field in body["message"] and says in body["message"]


@pytest.mark.trio
async def test_offset_is_capped_with_the_filters_naming_the_cursor_to_page_with(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with open_server(tmp_path / "data", search=True, max_offset=2, **backend) as server:
        assert (await server.publish(batch())).status_code == 200
        assert await ids(server, q="failed", offset=2) == ["p2"]
        body = await refused(server, 422, q="failed", offset=3)
        assert body["details"][0]["field"] == "offset"
        assert "from 0 to 2, the limit (AGGREGATOR_MAX_OFFSET)" in body["message"]
        assert "page deeper with after=<seq>" in body["message"]
        body = await refused(server, 422, source="web", order="desc", offset=3)
        assert "page deeper with before=<seq>" in body["message"]


@pytest.mark.trio
async def test_q_without_the_index_is_a_400_saying_how_to_turn_it_on(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with open_server(tmp_path / "data", **backend) as server:
        assert (await server.publish(batch())).status_code == 200
        body = await refused(server, 400, q="failed")
        assert body["error"] == "search_off" and "AGGREGATOR_SEARCH=on" in body["message"]
        # The other filters need no index.
        assert await ids(server, source="web", order="desc") == ["a3"]


@pytest.fixture
def server_url(tmp_path: Path, backend: dict[str, Any]) -> Iterator[str]:
    """A real server process with search on, holding ``EVENTS``: its URL."""
    args = ["--search"]
    if "database_url" in backend:
        args += ["--database-url", backend["database_url"]]
    with running_server(tmp_path / "data", *args) as server:
        response = httpx.post(f"{server.url}/publish", json=batch(), timeout=30)
        assert response.status_code == 200
        yield server.url


# A plain test: hypothesis drives it, a real server process answers.
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(q=st.text(st.characters(codec="utf-8"), max_size=40) | st.text('"*-OR aB9 ', max_size=24))
def test_no_q_is_answered_with_a_5xx(server_url: str, q: str) -> None:
    response = httpx.get(f"{server_url}/events", params={"q": q}, timeout=30)
    assert response.status_code in (200, 422), (q, response.text)
    if response.status_code == 422:
        assert response.json()["details"][0]["field"] == "q"


# The two stores agree ---------------------------------------------------------------------

QUERIES = [
    "failed", "login", '"login failed"', '"failed login"', "u12*", "u*", '"user u12"*',
    "failed -login", "payment OR zurich", "café", "retry", "order-77", "order*", "o*", "12",
    "msg", "user_id", "-x y", "n 1", "ok OR failed OR u999", '"ok from"', "zürich*", "ZU*",
]  # fmt: skip


@pytest.mark.trio
async def test_sqlite_and_postgres_give_the_same_results(tmp_path: Path, pg_url: str) -> None:
    found: dict[str, list[list[str]]] = {}
    for name, backend in (("sqlite", {}), ("postgres", {"database_url": pg_url})):
        async with open_server(tmp_path / name, search=True, **backend) as server:
            assert (await server.publish(batch())).status_code == 200
            found[name] = [await ids(server, q=q, order="desc") for q in QUERIES]
            found[name] += [await ids(server, q=q, topic="pay") for q in QUERIES]
    assert found["sqlite"] == found["postgres"]
    assert sum(map(len, found["sqlite"])) > 40  # the set finds things, not only nothing


@pytest.mark.trio
async def test_escaped_pairs_and_compatibility_capitals_are_found_as_sent_raw(
    searching: Server,
) -> None:
    # A JSON surrogate pair is one character (𠀀, a CJK letter past U+FFFF); 𝐀 decomposes to a
    # capital A, folded like any other (PostgreSQL, unlike SQLite's tokenizer, folds nothing).
    body = (
        '[{"topic": "cjk", "event_id": "e1", "timestamp": "2026-11-30T11:00:00Z", '
        '"source": "s", "payload": {"m": "\\ud840\\udc00 \\ud835\\udc00bc"}}, '
        '{"topic": "cjk", "event_id": "e2", "timestamp": "2026-11-30T11:00:00Z", '
        '"source": "s", "payload": {"m": "\U00020000 \U0001d400bc"}}]'
    )
    response = await searching.client.post(
        "/publish", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert await ids(searching, q="\U00020000") == ["e1", "e2"]
    assert await ids(searching, q="abc") == ["e1", "e2"]
    assert await ids(searching, q="\U0001d400BC", order="desc") == ["e2", "e1"]


@pytest.mark.trio
async def test_searches_leave_a_reader_for_health_and_the_other_reads(tmp_path: Path) -> None:
    # Eight cheap requests of a q like `u* OR u* …` (a prefix of 100,000 user ids, at 300,000
    # events) held the 4 readers for 5 to 15 s each, and /health waited 12 s behind them.
    db = tmp_path / "s.sqlite3"
    SQLiteStore(db, search=True).close()
    entered, release = threading.Semaphore(0), threading.Event()

    def slow_search(reader: Any) -> None:
        entered.release()
        release.wait()

    with trio.fail_after(30):
        async with (
            open_reader_pool(partial(SQLiteReader, db, search=True), 3) as readers,
            trio.open_nursery() as nursery,
        ):
            try:
                for _ in range(5):
                    nursery.start_soon(partial(readers.run, slow_search, search=True))
                for _ in range(2):  # two searches run (3 readers, all but one)...
                    await trio.to_thread.run_sync(entered.acquire)
                await trio.testing.wait_all_tasks_blocked()
                assert not entered.acquire(blocking=False)  # ...and the others wait
                with trio.fail_after(10):  # a plain read finds the third reader
                    assert await readers.run(lambda r: r.head()) == 0
            finally:
                release.set()


# /subscribe with the same filters ------------------------------------------------------------


@pytest.mark.trio
async def test_subscribe_filters_replay_and_live_by_source_and_q(searching: Server) -> None:
    later = [
        {"topic": "pay", "event_id": "p3", "timestamp": "2026-11-30T10:20:00Z",
         "source": "auth-service", "payload": {"msg": "login failed again"}},
        {"topic": "pay", "event_id": "p4", "timestamp": "2026-11-30T10:21:00Z",
         "source": "auth-service", "payload": {"msg": "login ok"}},
        {"topic": "pay", "event_id": "p5", "timestamp": "2026-11-30T10:22:00Z",
         "source": "web", "payload": {"msg": "login failed"}},
    ]  # fmt: skip
    with trio.fail_after(30):
        params = {"source": "auth-service", "q": "login failed"}
        async with open_stream(searching.running.url, **params) as stream:
            replayed = await stream.events(1)
            assert (await searching.publish(later)).status_code == 200
            live = await stream.events(1)
        assert [m.data["event_id"] for m in replayed + live] == ["a1", "p3"]
        async with open_stream(searching.running.url, q="failed", topic="pay") as stream:
            assert [m.data["event_id"] for m in await stream.events(4)] == [
                "p1", "p2", "p3", "p5"
            ]  # fmt: skip


@pytest.mark.trio
async def test_a_subscriber_whose_q_matches_nothing_of_a_busy_stream_gets_heartbeats(
    tmp_path: Path,
) -> None:
    # Events arrive more often than the heartbeat interval, and none matches: the stream sent
    # nothing at all (a heartbeat only when nothing arrived), for as long as the traffic lasted.
    with trio.fail_after(60):
        async with (
            open_server(tmp_path / "data", search=True, heartbeat_seconds=1.0) as server,
            open_stream(server.running.url, q="nevermatches") as stream,
            trio.open_nursery() as nursery,
        ):

            async def traffic() -> None:
                for n in range(100_000):  # back to back: many per heartbeat interval
                    event = {**batch()[0], "event_id": f"busy{n}"}
                    assert (await server.publish([event])).status_code == 200

            nursery.start_soon(traffic)
            heartbeats = 0
            while heartbeats < 3:
                message = await stream.next()
                assert message.id is None  # nothing matches
                heartbeats += "heartbeat" in message.comments
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_subscribe_refuses_a_bad_q_and_q_without_the_index(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with open_server(tmp_path / "data", **backend) as server:
        response = await server.client.get("/subscribe", params={"q": "failed"})
        assert response.status_code == 400 and "AGGREGATOR_SEARCH" in response.text
        response = await server.client.get("/subscribe", params={"q": '"open'})
        assert response.status_code == 422 and response.json()["details"][0]["field"] == "q"


@pytest.mark.trio
async def test_head_subscribe_answers_as_its_get_would(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    """HEAD checks the filters as GET does, then answers the stream's headers and no stream."""
    async with open_server(tmp_path / "data", **backend) as server:
        response = await server.client.head("/subscribe", params={"q": "failed"})
        assert response.status_code == 400, response.headers
        response = await server.client.head("/subscribe", params={"q": '"open'})
        assert response.status_code == 422, response.headers
        response = await server.client.head("/subscribe", params={"source": "web"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.content == b""
