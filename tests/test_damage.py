"""A damaged store stops the server with one line (issue 19, item 17).

The damage is real: a 10,000-event store is built by a real server, which is stopped; then pages
40–59 of the file are overwritten with garbage, as a failing disk or a stray write would. SQLite
notices a damaged page only when something reads it, so the server starts; the background
integrity check, or the first read or write over the damaged pages, must stop it with exit code 1
and a line that names the file and what to do, never "retry later" for ever.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aggregator.messages import EventRecord
from aggregator.store import CheckInterrupted, IntegrityCheck, StoreDamaged, StoreUnavailable
from aggregator.store.base import Retention
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from tests.support import ServerProcess, event, read_pid, running_server, wait_exit, wait_for

EVENTS = 10_000
FIRST_PAGE, LAST_PAGE = 40, 59  # 1-based, as SQLite numbers them
PAGE = 100  # events read at a time, as GET /events does
PAYLOAD = {"text": "x" * 100}


def database(data: Path) -> Path:
    return data / "aggregator.sqlite3"


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with a store of 10,000 events, built by a real server and closed."""
    data = tmp_path_factory.mktemp("intact")
    with (
        running_server(data) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        for batch in range(EVENTS // 1000):
            events = [event("t", f"e{batch}-{i}", payload=PAYLOAD) for i in range(1000)]
            assert http.post("/publish", json=events).status_code == 200
        wait_for(
            lambda: http.get("/readyz").json().get("integrity_check") == "passed",
            "the intact store's integrity check to pass",
        )
        metrics = http.get("/metrics").text
        assert 'aggregator_store_integrity_check{state="passed"} 1.0' in metrics
        assert 'aggregator_store_integrity_check{state="damaged"} 0.0' in metrics
        assert "aggregator_store_integrity_check_seconds " in metrics
        assert server.terminate() == 0
    assert not database(data).with_name("aggregator.sqlite3-wal").exists()  # all in the file
    return data


def damaged_after(data: Path) -> int:
    """A cursor whose next page of events lies on the damaged pages, found by reading them
    (with this schema, seq 601–1100: rows of ~270 bytes, 15 to a page)."""
    conn = sqlite3.connect(f"{database(data).as_uri()}?mode=ro", uri=True)
    try:
        for after in range(0, EVENTS, PAGE):
            try:
                conn.execute(
                    "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, PAGE)
                ).fetchall()
            except sqlite3.DatabaseError:
                return after
    finally:
        conn.close()
    raise AssertionError("no page of events reads the damage: the test damages nothing")


@pytest.fixture
def damaged(intact: Path, tmp_path: Path) -> Path:
    """A copy of the intact store with pages 40–59 overwritten."""
    data = tmp_path / "data"
    data.mkdir()
    path = database(data)
    path.write_bytes(database(intact).read_bytes())
    conn = sqlite3.connect(path)
    try:
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    with path.open("r+b") as file:
        file.seek((FIRST_PAGE - 1) * page_size)
        file.write(b"\xa5" * (LAST_PAGE - FIRST_PAGE + 1) * page_size)
    return data


@pytest.fixture
def started(damaged: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(["--port", "0", "--data-dir", str(damaged), "--integrity-check", "off"])
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


def assert_stopped_on_damage(server: ServerProcess, data: Path) -> str:
    """The server exits 1; its last line is the one-line reason. That line."""
    assert server.proc.wait(60) == 1, server.log()
    server.kill()  # joins the thread that reads its stderr
    last = server.lines[-1].rstrip("\n")
    path = database(data).resolve()
    assert last.startswith("aggregator: error: the store is damaged ("), server.log()
    assert f") at {path}: restore it from a backup, or recover what it holds with " in last
    assert f"`sqlite3 {path} .recover`" in last
    assert "Traceback" not in server.log()
    return last


def test_the_background_check_finds_the_damage_and_stops_the_server(damaged: Path) -> None:
    server = ServerProcess(["--port", "0", "--data-dir", str(damaged)])
    try:
        server.wait_ready()  # it comes up: the check does not hold readiness
        assert_stopped_on_damage(server, damaged)
    finally:
        server.kill()
    # No request was made: the check found it (SQLITE_CORRUPT while reading, or its report).
    assert "CRITICAL aggregator.actors.integrity: the store is damaged" in server.log()
    assert "integrity check (PRAGMA quick_check) in" not in server.log()  # it did not pass


def test_a_read_over_the_damage_is_answered_and_stops_the_server(
    started: ServerProcess, damaged: Path
) -> None:
    with httpx.Client(base_url=started.url, timeout=30) as http:
        assert http.get("/health").status_code == 200  # nothing has read the damage yet
        response = http.get("/events", params={"after": damaged_after(damaged), "limit": PAGE})
    assert response.status_code == 503, response.text
    assert "Retry-After" not in response.headers  # not "retry later": no retry can read it
    body = response.json()
    assert body["error"] == "store_damaged"
    assert "database disk image is malformed" in body["message"]
    assert body["message"].endswith("; the server is stopping")
    last = assert_stopped_on_damage(started, damaged)
    assert "SQLITE_CORRUPT" in last


def test_a_read_by_the_read_process_over_the_damage_stops_the_server(
    started: ServerProcess, damaged: Path
) -> None:
    """The read process's readers report damage to the server, which stops as on its own."""
    reader = read_pid(started)
    with httpx.Client(base_url=started.url, timeout=30) as http:
        # The connection's first request is a read: the read process answers it.
        response = http.get("/events", params={"after": damaged_after(damaged), "limit": PAGE})
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "store_damaged"
    last = assert_stopped_on_damage(started, damaged)
    assert "SQLITE_CORRUPT" in last
    assert wait_exit(reader, 10)  # and the read process with it


def test_a_publish_that_meets_the_damage_is_answered_and_stops_the_server(
    started: ServerProcess, damaged: Path
) -> None:
    # A resend of a stored event: the writer reads its stored row (on a damaged page) to tell a
    # duplicate from a hash collision.
    after = damaged_after(damaged)  # seq s is event e{(s - 1) // 1000}-{(s - 1) % 1000}
    resend = [
        event("t", f"e{s // 1000}-{s % 1000}", payload=PAYLOAD) for s in range(after, after + PAGE)
    ]
    with httpx.Client(base_url=started.url, timeout=30) as http:
        response = http.post("/publish", json=resend)
    assert response.status_code == 503, response.text
    assert "the store is damaged" in response.json()["message"]
    assert_stopped_on_damage(started, damaged)


def test_retention_that_meets_the_damage_stops_the_server(damaged: Path) -> None:
    # Every event is older than a second: the writer's upkeep deletes them, oldest first, in
    # steps of 5,000 — through the damaged pages, with no request at all.
    args = ["--integrity-check", "off", "--retention-seconds", "1"]
    server = ServerProcess(["--port", "0", "--data-dir", str(damaged), *args])
    try:
        server.wait_ready()
        last = assert_stopped_on_damage(server, damaged)
    finally:
        server.kill()
    assert "SQLITE_CORRUPT" in last
    assert "CRITICAL aggregator.actors.writer: the store is damaged" in server.log()


def test_a_subscriber_replaying_over_the_damage_is_told_and_the_server_stops(
    started: ServerProcess, damaged: Path
) -> None:
    with (
        httpx.Client(base_url=started.url, timeout=30) as http,
        http.stream("GET", "/subscribe", params={"after": damaged_after(damaged)}) as stream,
    ):
        assert stream.status_code == 200
        text = "".join(stream.iter_text())  # the stream ends: the server stops
    assert ": the store is damaged (database disk image is malformed" in text
    assert text.endswith("; the server is stopping\n\n")
    assert_stopped_on_damage(started, damaged)


def test_the_store_says_which_errors_are_damage(damaged: Path, intact: Path) -> None:
    reader = SQLiteReader(database(damaged))
    try:
        with pytest.raises(StoreDamaged, match=r"malformed \(SQLITE_CORRUPT\)"):
            reader.events(None, damaged_after(damaged), PAGE, 0)
        assert len(reader.events(None, EVENTS - PAGE, PAGE, 0)) == PAGE  # past the damage
    finally:
        reader.close()
    with pytest.raises(StoreDamaged, match=r"quick_check|SQLITE_CORRUPT"):
        IntegrityCheck(database(damaged)).run()
    with pytest.raises(StoreDamaged, match=r"integrity_check|SQLITE_CORRUPT"):
        IntegrityCheck(database(damaged), "full").run()
    IntegrityCheck(database(intact)).run()  # passes: returns
    IntegrityCheck(database(intact), "full").run()


def test_an_interrupted_check_says_so(intact: Path) -> None:
    check = IntegrityCheck(database(intact))
    check.interrupt()  # before it starts: a server stopping at once
    with pytest.raises(CheckInterrupted):
        check.run()


def test_a_check_that_cannot_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="unable to open"):
        IntegrityCheck(tmp_path / "missing" / "aggregator.sqlite3").run()


def test_a_reader_holding_a_snapshot_does_not_stall_the_writer_at_the_wal_bound(
    tmp_path: Path,
) -> None:
    """The integrity check holds one snapshot for seconds on a large store. Past its bound the
    writer checkpoints the WAL with RESTART, which waits for such a reader: it waited the whole
    5 s busy timeout, at every transaction, for as long as the check ran."""
    path = tmp_path / "aggregator.sqlite3"
    store = SQLiteStore(path, wal_pages=256)  # the WAL's bound: 2 MiB
    reader = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # the snapshot is held now
        slowest = 0.0
        for i in range(40):  # ~100 KB a transaction: the WAL passes its bound after ~20
            records = [
                EventRecord("t", f"{i}-{j}", "2026-11-21T10:00:00.000000Z", "s", "x" * 1000)
                for j in range(100)
            ]
            started = time.perf_counter()
            store.commit([records])
            slowest = max(slowest, time.perf_counter() - started)
        assert path.with_name(path.name + "-wal").stat().st_size > 2 * 256 * 4096  # held
        assert slowest < 2.5  # well below the 5 s a transaction waited (a loaded machine)
    finally:
        reader.close()
        store.close()


def test_the_full_check_compares_the_dedup_index_with_the_events(
    intact: Path, tmp_path: Path
) -> None:
    """The dedup index is a table of its own, so no PRAGMA compares it with the events: with
    one key row naming the neighbouring seq (one bit of a page changed), integrity_check passed
    and a resend of that event was stored a second time. ``full`` now compares them."""
    data = tmp_path / "data"
    data.mkdir()
    path = database(data)
    path.write_bytes(database(intact).read_bytes())
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        (h, seq) = conn.execute("SELECT h, seq FROM keys WHERE seq = 4645").fetchone()
        conn.execute("UPDATE keys SET seq = seq - 1 WHERE h = ? AND seq = ?", (h, seq))
    finally:
        conn.close()
    IntegrityCheck(path).run()  # quick_check cannot see it: the pages are sound
    server = ServerProcess(["--port", "0", "--data-dir", str(data), "--integrity-check", "full"])
    try:
        server.wait_ready()
        last = assert_stopped_on_damage(server, data)
    finally:
        server.kill()
    assert "1 stored events have no row in the dedup index (keys)" in last
    assert "; 2 problems listed" in last  # and a key row that names the wrong event


def test_the_full_check_passes_a_store_whose_events_all_expired(tmp_path: Path) -> None:
    """Keys of expired events stay until their bucket is swept: they are not damage."""
    path = tmp_path / "aggregator.sqlite3"
    store = SQLiteStore(path)
    store.commit([[EventRecord("t", str(i), "2026-11-21T10:00:00Z", "s", "{}") for i in range(50)]])
    store.close()  # the keys are in the table now
    store = SQLiteStore(path)
    assert store.maintain(Retention(max_bytes=1), 100, reclaim=True).expired == 50
    store.close()
    conn = sqlite3.connect(path)
    keys, events = conn.execute(
        "SELECT count(*), (SELECT count(*) FROM events) FROM keys"
    ).fetchone()
    assert keys > 0 and events == 0
    conn.close()
    IntegrityCheck(path, "full").run()
