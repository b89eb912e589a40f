"""Hostile and broken syslog peers against a real server process: garbage, truncated and huge
octet counts, lines over the limit, a peer that stalls mid-frame or vanishes, a sender faster
than the store, more connections than allowed, and shutdown with messages not yet committed.
Each ends with the server healthy and ``/stats`` consistent."""

from __future__ import annotations

import contextlib
import random
import socket
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import wait_for
from tests.syslog import Door, syslog_server

LIMIT = 4096  # --max-payload-bytes of the shared server


def line(app: str, text: str = "fine") -> bytes:
    return f"<13>1 - host {app} - - - {text}\n".encode()


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    args = ("--max-payload-bytes", str(LIMIT), "--read-timeout-seconds", "1")
    with syslog_server(tmp_path_factory.mktemp("hostile"), *args) as door:
        yield door
        door.assert_healthy()


def deltas(door: Door, before: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    after = door.messages()
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def test_garbage_is_counted_and_the_next_line_is_read(door: Door) -> None:
    before, counters = door.messages(), door.counters()
    garbage = bytes(b for b in random.Random(14).randbytes(20_000) if b not in b"0123456789")
    door.send_tcp(garbage + b"\n" + line("after-garbage"))
    assert len(door.events("after-garbage")) == 1  # committed before the server closed
    moved = deltas(door, before)
    assert moved.pop(("tcp", "stored")) == 1 and moved.pop(("tcp", "malformed")) >= 1
    assert moved == {}
    assert [a - b for a, b in zip(door.counters(), counters, strict=True)] == [1, 1, 0]


@pytest.mark.parametrize(
    ("data", "result"),
    [
        (b"500 <13>1 - host trunc - - - only part", "truncated"),
        (b"999999999 " + b"x" * 70_000, "too_large"),
        (b"<13>1 - host big - - - " + b"x" * (LIMIT * 3) + b"\n", "too_large"),
        (b"<13>1 - host big2 - - - " + b"\x01" * (LIMIT // 2) + b"\n", "too_large"),  # escaped
        (b"-5 <13>1 - host neg - - - m\n", "malformed"),  # no count: a line, not syslog
        (b"12a <13>1 - host nondigit - - - m\n", "malformed"),
        (b"1234567890 <13>1 - host ten - - - m\n", "malformed"),  # ten digits: no count
        (b"4294967297 " + b"x" * 100, "malformed"),  # 2^32 + 1: no wrap-around to 1
        (b"<999>1 - host pri - - - m\n", "malformed"),
        (b"\xff\xfe\x02\x01\n", "malformed"),  # (a NUL would end the line)
    ],
    ids=[
        "truncated-count",
        "huge-count",
        "long-line",
        "long-payload",
        "negative-count",
        "non-digit-count",
        "ten-digit-count",
        "wrapping-count",
        "bad-pri",
        "binary",
    ],
)
def test_a_bad_frame_is_counted_and_nothing_is_stored(door: Door, data: bytes, result: str) -> None:
    before, counters = door.messages(), door.counters()
    assert door.send_tcp(data) == (result != "truncated")  # a cut frame: a reset, not a FIN
    assert deltas(door, before) == {("tcp", result): 1}
    assert door.counters() == counters


def test_a_sender_that_closes_inside_a_frame_gets_a_reset_after_the_commit(door: Door) -> None:
    """A FIN says "every frame you sent is committed"; with a counted frame cut short by the
    sender's close it was a FIN all the same."""
    before = door.messages()
    assert not door.send_tcp(line("before-cut") + b"300 <13>1 - host cut - - - part")
    assert len(door.events("before-cut")) == 1  # the whole frame: committed before the reset
    assert deltas(door, before) == {("tcp", "stored"): 1, ("tcp", "truncated"): 1}
    assert door.send_tcp(line("no-cut") + b"<13>1 - host no-lf - - - a last line, no LF")
    assert len(door.events("no-lf")) == 1  # a line ended by the close is whole: a FIN


def test_a_line_over_the_limit_does_not_take_the_next_one_with_it(door: Door) -> None:
    before = door.messages()
    door.send_tcp(line("long", "x" * LIMIT * 2) + line("after-long"))
    assert len(door.events("after-long")) == 1
    assert deltas(door, before) == {("tcp", "too_large"): 1, ("tcp", "stored"): 1}


def test_udp_garbage_and_oversized_datagrams_are_counted(door: Door) -> None:
    before = door.messages()
    door.send_udp(b"\x00\x01garbage")
    door.send_udp(b"<13>1 - host udp-big - - - " + b"y" * (LIMIT * 2))
    door.send_udp(line("udp-after"))
    door.wait_events("udp-after", 1)
    wait_for(lambda: len(deltas(door, before)) == 3, "the UDP counts")
    assert deltas(door, before) == {
        ("udp", "malformed"): 1,
        ("udp", "too_large"): 1,
        ("udp", "stored"): 1,
    }


@pytest.mark.parametrize(
    "begun",
    [b"200 <13>1 - host stalled - - - half of it", b"200", b"200 ", b"<13>1 - no newline"],
    ids=["mid-frame", "bare-count", "count-and-space", "mid-line"],
)
def test_a_peer_that_stalls_mid_frame_is_cut_and_costs_the_others_nothing(
    door: Door, begun: bytes
) -> None:
    """Slowloris: a frame begun (even a bare length prefix) must end within
    --read-timeout-seconds."""
    before = door.messages()
    with socket.create_connection(("127.0.0.1", door.tcp), timeout=30) as stalled:
        stalled.sendall(begun)
        other = f"while-stalled-{len(begun)}"
        door.send_tcp(line(other))  # served meanwhile
        assert len(door.events(other)) == 1
        with pytest.raises(ConnectionResetError):  # --read-timeout-seconds 1: cut, a reset
            stalled.recv(100)
    assert deltas(door, before) == {("tcp", "stored"): 1, ("tcp", "truncated"): 1}
    wait_for(lambda: door.gauge("aggregator_syslog_connections") == 0, "no connection open")


def test_a_peer_that_vanishes_mid_frame_is_counted(door: Door) -> None:
    before = door.messages()
    sock = socket.create_connection(("127.0.0.1", door.tcp), timeout=30)
    sock.sendall(line("before-reset") + b"300 <13>1 - host reset - - - part")
    wait_for(lambda: door.events("before-reset"), "the whole frame to be committed")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # an RST, not a FIN
    wait_for(lambda: ("tcp", "truncated") in deltas(door, before), "the cut frame")
    assert deltas(door, before) == {("tcp", "stored"): 1, ("tcp", "truncated"): 1}
    wait_for(lambda: door.gauge("aggregator_syslog_connections") == 0, "no connection open")


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=4))
def test_arbitrary_bytes_never_hurt_the_listener(door: Door, chunks: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", door.tcp), timeout=30) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):  # a frame cut at the end: a reset
            while sock.recv(4096):
                pass
    door.send_tcp(line("after-fuzz", str(random.random())))
    received, unique, duplicates = door.counters()
    assert received == unique + duplicates


# --- one server each: the store is locked from outside, or the server is stopped ------------


@contextmanager
def store_locked(data: Path) -> Iterator[None]:
    """SQLite's write lock, held by another connection: the writer cannot commit meanwhile."""
    conn = sqlite3.connect(data / "aggregator.sqlite3", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def rows(data: Path, topic: str) -> int:
    conn = sqlite3.connect(data / "aggregator.sqlite3")
    try:
        return int(
            conn.execute("SELECT count(*) FROM events WHERE topic = ?", [topic]).fetchone()[0]
        )
    finally:
        conn.close()


@pytest.mark.sqlite_only
def test_a_sender_faster_than_the_store_is_slowed_not_buffered(tmp_path: Path) -> None:
    """While the store cannot commit, the server stops reading: the sender's socket fills and
    blocks after a few MiB (the kernel's buffers), not the 64 MiB it has to send."""
    message = line("fast", "z" * 8000)
    total = 8192  # messages, 64 MiB
    buffer = 65536
    with syslog_server(tmp_path, "--syslog-buffer-bytes", str(buffer)) as door:
        sock = socket.create_connection(("127.0.0.1", door.tcp), timeout=30)
        data = message * total
        sent = 0
        with store_locked(tmp_path):
            sock.setblocking(False)
            while sent < len(data):
                try:
                    sent += sock.send(data[sent : sent + 65536])
                except BlockingIOError:
                    # Still blocked after a second: the server has stopped reading (a server
                    # that read on would take the whole 64 MiB, however slowly).
                    sock.settimeout(1)
                    try:
                        sent += sock.send(data[sent : sent + 65536])
                        sock.setblocking(False)
                    except TimeoutError:
                        break
            pending = door.gauge("aggregator_syslog_pending")
        assert sent < len(data) // 2, f"the server read {sent} bytes while it could not commit"
        assert pending * len(message) <= 4 * (buffer + 65536)  # two batches, each one chunk over
        sock.settimeout(60)
        sock.sendall(data[sent:])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # closed after the commit of everything
        sock.close()
        assert len(door.events("fast")) == 1  # byte-identical messages: one event
        assert door.counters() == (total, 1, total - 1)
        door.assert_healthy()


@pytest.mark.sqlite_only
def test_the_server_closes_a_connection_only_once_its_messages_are_committed(
    tmp_path: Path,
) -> None:
    with (
        syslog_server(tmp_path) as door,
        socket.create_connection(("127.0.0.1", door.tcp), timeout=30) as sock,
    ):
        with store_locked(tmp_path):
            sock.sendall(line("clean-close"))
            sock.shutdown(socket.SHUT_WR)  # the sender is done: a clean close
            wait_for(lambda: door.gauge("aggregator_syslog_pending") == 1, "the line read")
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):  # not closed: the commit waits for the lock
                sock.recv(1)
        sock.settimeout(30)
        assert sock.recv(1) == b""
        assert len(door.events("clean-close")) == 1
        door.assert_healthy()


@pytest.mark.sqlite_only
def test_udp_drops_and_counts_what_does_not_fit_while_the_store_is_locked(tmp_path: Path) -> None:
    with syslog_server(tmp_path, "--syslog-buffer-bytes", "16384") as door:
        with store_locked(tmp_path):
            for n in range(200):
                door.send_udp(line("udp-flood", f"{n} " + "u" * 1000))
            wait_for(lambda: door.messages()["udp", "dropped"] > 0, "a counted drop")
        dropped = door.messages()["udp", "dropped"]
        wait_for(lambda: door.gauge("aggregator_syslog_pending") == 0, "the backlog committed")
        stored = len(door.events("udp-flood"))
        assert stored >= 1 and stored + dropped <= 200
        assert door.messages()["udp", "stored"] == stored
        door.assert_healthy()


def test_connections_beyond_the_maximum_wait_to_be_accepted(tmp_path: Path) -> None:
    with syslog_server(tmp_path, "--syslog-max-connections", "2") as door:
        first = socket.create_connection(("127.0.0.1", door.tcp), timeout=30)
        second = socket.create_connection(("127.0.0.1", door.tcp), timeout=30)
        wait_for(lambda: door.gauge("aggregator_syslog_connections") == 2, "two connections")
        third = socket.create_connection(("127.0.0.1", door.tcp), timeout=30)  # the backlog
        third.sendall(line("third"))
        first.sendall(line("first"))
        second.sendall(line("second"))
        door.wait_events("first", 1)
        door.wait_events("second", 1)
        assert door.events("third") == []  # sent first, but not read: not accepted yet
        assert door.gauge("aggregator_syslog_connections") == 2
        first.close()
        door.wait_events("third", 1)
        for sock in (second, third):
            sock.close()
        door.assert_healthy()


@pytest.mark.sqlite_only
def test_shutdown_closes_the_listeners_and_commits_what_was_read(tmp_path: Path) -> None:
    with syslog_server(tmp_path, "--shutdown-grace-seconds", "60") as door:
        with store_locked(tmp_path):
            open_sock = socket.create_connection(("127.0.0.1", door.tcp), timeout=30)
            open_sock.sendall(line("at-shutdown", "0"))
            wait_for(lambda: door.gauge("aggregator_syslog_pending") == 1, "one in the writer")
            # These wait in the connection's backlog, behind the one the writer holds.
            open_sock.sendall(b"".join(line("at-shutdown", str(n)) for n in range(1, 50)))
            wait_for(lambda: door.gauge("aggregator_syslog_pending") == 50, "50 messages read")
            door.server.proc.terminate()

            def refused() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", door.tcp), timeout=5).close()
                except ConnectionRefusedError:
                    return True
                return False

            wait_for(refused, "the listener to close")
            assert door.server.proc.poll() is None  # still waiting to commit
        assert door.server.proc.wait(60) == 0
        assert open_sock.recv(1) == b""  # closed by the server, after the commit
        open_sock.close()
    assert rows(tmp_path, "at-shutdown") == 50


@pytest.mark.sqlite_only
def test_a_server_killed_before_the_commit_resets_the_connection(tmp_path: Path) -> None:
    """kill -9 with a line read and not committed: the kernel closed the dead process's socket
    with a FIN, and a sender waiting for the close took its lost line for stored."""
    with (
        syslog_server(tmp_path) as door,
        socket.create_connection(("127.0.0.1", door.tcp), timeout=30) as sock,
    ):
        with store_locked(tmp_path):
            sock.sendall(line("killed"))
            sock.shutdown(socket.SHUT_WR)
            wait_for(lambda: door.gauge("aggregator_syslog_pending") == 1, "the line read")
            door.server.proc.kill()
            door.server.proc.wait(30)
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    assert rows(tmp_path, "killed") == 0


@pytest.mark.sqlite_only
def test_a_connection_not_committed_within_the_grace_is_reset_not_closed(tmp_path: Path) -> None:
    """A sender that waits for the server's close must never take it for "committed" when the
    grace ran out first: it gets a reset."""
    with (
        syslog_server(tmp_path, "--shutdown-grace-seconds", "0.5") as door,
        socket.create_connection(("127.0.0.1", door.tcp), timeout=30) as sock,
        store_locked(tmp_path),  # for longer than the grace: nothing can commit
    ):
        sock.sendall(line("grace-over"))
        sock.shutdown(socket.SHUT_WR)
        wait_for(lambda: door.gauge("aggregator_syslog_pending") == 1, "the line read")
        door.server.proc.terminate()
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
        assert door.server.proc.wait(60) == 0
    assert rows(tmp_path, "grace-over") == 0


@pytest.fixture(params=["sqlite", "postgres"])
def store_args(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "postgres":
        return ["--database-url", request.getfixturevalue("pg_url")]
    return []


def test_nul_bytes_and_invalid_utf8_are_stored_as_the_docs_say(
    tmp_path: Path, store_args: list[str]
) -> None:
    """A NUL ends a newline-framed message (RFC 6587's other TRAILER: three NUL-ended messages
    were stored as one); inside a counted frame or a datagram it is kept, as U+0000, in every
    field, on both stores (PostgreSQL's text cannot hold a NUL: the store escapes it). Bytes that
    are not UTF-8 become U+FFFD; the id hashes the bytes, so they stay two events."""
    inner = b"<13>1 - ho\x00st nul-inside - - - a\x00b"
    with syslog_server(tmp_path, *store_args) as door:
        door.send_tcp(b"".join(line(f"nul-ended-{n}").rstrip(b"\n") + b"\x00" for n in range(3)))
        door.send_tcp(b"%d %s" % (len(inner), inner))
        door.send_udp(line("nul-udp").rstrip(b"\n") + b"\x00")
        door.send_tcp(line("nul-udp"))  # the same message LF-ended: the same event
        door.send_tcp(line("latin1", "caf\xe9").replace(b"\xc3\xa9", b"\xe9"))
        door.send_tcp(line("latin1", "caf\xe8").replace(b"\xc3\xa8", b"\xe8"))
        # (PostgreSQL's /events may show a commit a moment later: wait_events, not events.)
        for n in range(3):
            [ended] = door.wait_events(f"nul-ended-{n}", 1)
            assert ended["payload"]["message"] == "fine"
        [kept] = door.wait_events("nul-inside", 1)
        assert (kept["source"], kept["payload"]["message"]) == ("ho\x00st", "a\x00b")
        door.wait_events("nul-udp", 1)
        wait_for(lambda: door.messages().get(("tcp", "duplicate")) == 1, "the LF-ended copy")
        assert len(door.events("nul-udp")) == 1
        latin1 = door.wait_events("latin1", 2)
        assert sorted(e["payload"]["message"] for e in latin1) == ["caf\ufffd"] * 2
        assert latin1[0]["event_id"] != latin1[1]["event_id"]
        door.assert_healthy()
