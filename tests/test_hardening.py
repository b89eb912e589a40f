"""Requests that cost the server more than they should, against real server processes (issue 19
items 5, 10 and 11): a gzip body of many empty members, deep offsets and reads that starve the
probes, and an unbounded number of topics.
"""

from __future__ import annotations

import gzip
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from aggregator.decoders.content import MAX_GZIP_MEMBERS
from tests.support import ServerProcess, event, running_server, wait_for


def timed_health(url: str) -> float:
    started = time.monotonic()
    assert httpx.get(f"{url}/health", timeout=60).status_code == 200
    return time.monotonic() - started


def test_a_gzip_body_of_many_empty_members_is_refused_and_health_stays_fast(
    tmp_path: Path,
) -> None:
    """4 MiB of 20-byte empty gzip members: the decoder copied the rest of the body once per
    member (quadratic), on the event loop; a concurrent /health took 30.6 s."""
    empty = gzip.compress(b"", mtime=0)
    body = empty * (4 * 1024 * 1024 // len(empty))
    answers: dict[str, httpx.Response] = {}
    with running_server(tmp_path) as server:

        def post() -> None:
            answers["gzip"] = httpx.post(
                f"{server.url}/publish",
                content=body,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
                timeout=120,
            )

        thread = threading.Thread(target=post)
        thread.start()
        health = [timed_health(server.url) for _ in range(5)]
        thread.join(120)
    refused = answers["gzip"]
    assert refused.status_code == 413, refused.text
    assert f"more than {MAX_GZIP_MEMBERS} members, the limit" in refused.json()["message"]
    assert max(health) < 3, health  # 30 s before; a loaded machine takes well under 1 s


def test_a_large_gzip_body_of_several_members_is_stored(tmp_path: Path) -> None:
    """Decoded on a thread (a large body), every member read: nothing is lost by the walk."""
    lines = [
        f'{{"topic": "t", "event_id": "{n}", "timestamp": "2026-11-21T10:00:00Z", '
        f'"source": "s", "payload": {{"x": "{"y" * 900}"}}}}\n'
        for n in range(1000)
    ]
    members = [gzip.compress("".join(lines[i : i + 100]).encode()) for i in range(0, 1000, 100)]
    with running_server(tmp_path) as server:
        response = httpx.post(
            f"{server.url}/publish",
            content=b"".join(members),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/x-ndjson"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 1000, "stored": 1000, "duplicates": 0}


LAUNCHER = """
import sys, threading
from aggregator.store import sqlite_reader, sqlite_search
from aggregator.__main__ import main

sqlite_reader.READ_TIMEOUT_SECONDS = 0.5
find = sqlite_search.find  # what GET /events reads through
release = threading.Event()

def slow(conn, query):
    if query.topic == "slow":  # a long read: a deep offset on a large store, a slow disk
        print("a slow read", file=sys.stderr, flush=True)
        release.wait(8)
    if query.topic == "endless":  # a statement that never ends on its own
        conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
            "SELECT count(*) FROM c"
        ).fetchone()
    return find(conn, query)

sqlite_search.find = slow
main(sys.argv[1:])
"""


def slow_read_server(tmp_path: Path, *args: str) -> AbstractContextManager[ServerProcess]:
    return running_server(tmp_path, *args, launcher=LAUNCHER)


def test_long_reads_on_every_client_reader_do_not_delay_health_or_the_tail(
    tmp_path: Path,
) -> None:
    """Twelve deep-offset reads in parallel made /health take 2.45 s: it waited for a reader of
    the same pool. The probes and the live tail now have readers of their own."""
    with slow_read_server(tmp_path, "--readers", "2") as server:
        threads = [
            threading.Thread(
                target=httpx.get, args=(f"{server.url}/events?topic=slow",), kwargs={"timeout": 30}
            )
            for _ in range(4)
        ]
        with httpx.stream("GET", f"{server.url}/subscribe", timeout=30) as stream:
            lines = stream.iter_lines()
            assert any("subscribed" in line for line in lines)  # the opening comment
            for thread in threads:
                thread.start()
            wait_for(lambda: sum("a slow read" in line for line in server.lines) >= 2, "reads")
            assert timed_health(server.url) < 2
            assert httpx.post(f"{server.url}/publish", json=event(), timeout=10).status_code == 200
            started = time.monotonic()
            assert any(line.startswith("data: ") for line in lines)  # the tail read it
            assert time.monotonic() - started < 2
        for thread in threads:
            thread.join(30)


def test_a_read_is_time_limited(tmp_path: Path) -> None:
    with slow_read_server(tmp_path) as server:
        response = httpx.get(f"{server.url}/events?topic=endless", timeout=30)
        assert response.status_code == 503, response.text
        assert "longer than 0.5 s, the limit of a read" in response.json()["message"]
        assert timed_health(server.url) < 2


def test_offset_is_capped_with_a_message_naming_the_limit(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-offset", "500") as server:
        assert httpx.get(f"{server.url}/events?offset=500").status_code == 200
        refused = httpx.get(f"{server.url}/events?offset=501")
    assert refused.status_code == 422
    body = refused.json()
    assert "from 0 to 500, the limit (AGGREGATOR_MAX_OFFSET)" in body["message"]
    assert "after=<seq>" in body["message"]
    assert body["details"][0]["field"] == "offset"


def test_topics_beyond_the_limit_are_refused_with_the_limit_named(tmp_path: Path) -> None:
    """300,000 topics from one client in 6 s made /stats 65 MB and /topics 90 MB: nothing
    bounded them. A request that would add a topic over AGGREGATOR_MAX_TOPICS is refused whole;
    the limit holds across a restart (the topics stored are counted at start-up)."""

    def publish(url: str, *topics: str) -> httpx.Response:
        batch = [event(topic=t, event_id=f"{t}-{n}") for n, t in enumerate(topics)]
        return httpx.post(f"{url}/publish", json=batch, timeout=10)

    with running_server(tmp_path, "--max-topics", "3") as server:
        assert publish(server.url, "a", "b").status_code == 200
        refused = publish(server.url, "a", "c", "d")
        assert publish(server.url, "c", "a").status_code == 200
        assert publish(server.url, "d").status_code == 422
        stats = httpx.get(f"{server.url}/stats").json()
    assert refused.status_code == 422
    body = refused.json()
    assert body["error"] == "too_many_topics"
    assert "over 3 topics, the limit (AGGREGATOR_MAX_TOPICS)" in body["message"]
    assert "nothing of the request was stored" in body["message"]
    assert [(d["index"], d["field"]) for d in body["details"]] == [(1, "topic"), (2, "topic")]
    assert stats["topics"] == ["a", "b", "c"] and stats["received"] == 4
    with running_server(tmp_path, "--max-topics", "3") as server:
        assert publish(server.url, "e").status_code == 422
        assert publish(server.url, "b").status_code == 200
