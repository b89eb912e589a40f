"""The read process (``aggregator/reads.py``, ``aggregator/front/readside.py``): real processes.

A connection whose next request is a read moves to the read process; the next request of any
other kind moves it back. What these tests prove: reads are answered while the server's own
process is stopped (SIGSTOP), a pipelined mix is answered in order with nothing lost, the
answers are the server's own, and either process ending is survived.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import resource
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import hypercorn.config
import msgspec
import pytest
import trio
import trio.testing

from aggregator import reads
from aggregator.config import Config
from aggregator.front import handoff, readside
from aggregator.front.handoff import CONNECTION, End
from aggregator.front.readside import MAX_PENDING, Observed, ReadSide, Start, opens_with_read
from aggregator.front.server import HttpServer, PeerStream
from aggregator.incidents import Incidents
from aggregator.reads import SLICE_NS, ReadServer, _damaged, _servable
from aggregator.store import StoreDamaged
from tests.support import (
    READ_PROCESS,
    ServerProcess,
    event,
    read_pid,
    running_server,
    wait_exit,
    wait_for,
)


@contextmanager
def connected(url: str) -> Iterator[socket.socket]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        yield sock


class Answers:
    """HTTP/1.1 answers read one after the other from a socket (each has a Content-Length)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _more(self) -> None:
        data = self._sock.recv(65536)
        assert data, f"the connection ended; unread: {self._buffer!r}"
        self._buffer += data

    def next(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self._buffer:
            self._more()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers["content-length"])
        while len(self._buffer) < length:
            self._more()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return int(status_line.split()[1]), headers, body


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """Process ``pid`` stopped (SIGSTOP) for the block: none of its threads runs."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def get(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: x", *headers, "", ""]).encode()


def publish(*events: dict[str, object]) -> bytes:
    body = json.dumps(list(events)).encode()
    head = (
        "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_reads_are_answered_while_the_server_process_is_stopped(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        read_pid(server)
        with connected(server.url) as sock:
            answers = Answers(sock)
            sock.sendall(publish(event("t", "e1")))
            assert answers.next()[0] == 200
            sock.sendall(get("/events?topic=t"))  # the connection moves to the read process
            assert [e["event_id"] for e in json.loads(answers.next()[2])] == ["e1"]
            with stopped(server.proc.pid):
                # Answered by the read process alone: the server's threads are all stopped.
                sock.sendall(get("/stats") + get("/events?topic=t&after=0") + get("/topics"))
                stats, events, topics = answers.next(), answers.next(), answers.next()
            assert json.loads(stats[2])["unique_processed"] == 1
            assert [e["event_id"] for e in json.loads(events[2])] == ["e1"]
            assert [t["topic"] for t in json.loads(topics[2])] == ["t"]
            # A publish on the same connection goes back to the server, and a read after it
            # to the read process again.
            sock.sendall(publish(event("t", "e2")))
            assert json.loads(answers.next()[2])["stored"] == 1
            sock.sendall(get("/events?topic=t"))
            assert [e["event_id"] for e in json.loads(answers.next()[2])] == ["e1", "e2"]
        assert server.terminate() == 0


def test_the_read_process_reads_a_postgresql_store(tmp_path: Path, pg_url: str) -> None:
    with running_server(tmp_path, "--database-url", pg_url) as server:
        read_pid(server)
        with connected(server.url) as sock:
            answers = Answers(sock)
            sock.sendall(publish(event("t", "e1")))
            assert answers.next()[0] == 200
            sock.sendall(get("/stats"))  # the connection moves to the read process
            assert answers.next()[0] == 200
            with stopped(server.proc.pid):
                sock.sendall(get("/events?topic=t"))
                status, _, body = answers.next()
        assert (status, [e["event_id"] for e in json.loads(body)]) == (200, ["e1"])
        assert server.terminate() == 0


def test_a_pipelined_mix_is_answered_in_order_in_one_write_and_byte_by_byte(
    tmp_path: Path,
) -> None:
    """Reads and publishes in one write: each is answered once, in order, whichever process
    answers it; then the same sent a byte at a time (every split of a head and a body)."""
    with running_server(tmp_path) as server:
        read_pid(server)
        for round_, sends in (("whole", 1), ("bytes", 0)):
            batch = (
                get("/stats")
                + publish(event("p", f"{round_}-1"))
                + get("/events?topic=p&after=0&limit=1000")
                + get("/livez")
                + publish(event("p", f"{round_}-1"), event("p", f"{round_}-2"))
                + get("/events?topic=p")
                + get("/stats", "Connection: close")
            )
            with connected(server.url) as sock:
                if sends:
                    sock.sendall(batch)
                else:
                    for index in range(len(batch)):
                        sock.sendall(batch[index : index + 1])
                answers = Answers(sock)
                got = [answers.next() for _ in range(7)]
                assert sock.recv(1) == b""  # closed after the last, as asked
            statuses = [status for status, _, _ in got]
            assert statuses == [200] * 7, got
            first, second = json.loads(got[1][2]), json.loads(got[4][2])
            assert (first["stored"], second["stored"], second["duplicates"]) == (1, 1, 1)
            seen = [e["event_id"] for e in json.loads(got[2][2])]
            assert seen[-1] == f"{round_}-1"  # the publish before it was answered first
            assert json.loads(got[3][2]) == {"status": "ok"}
            assert [e["event_id"] for e in json.loads(got[5][2])][-2:] == [
                f"{round_}-1",
                f"{round_}-2",
            ]
        stats = httpx.get(f"{server.url}/stats").json()
        assert (stats["received"], stats["unique_processed"]) == (6, 4)
        assert server.terminate() == 0


QUERIES = [
    "/events?topic=t",
    "/events?topic=t&limit=1",  # a next page: Link
    "/events?order=desc&limit=2",
    "/events?limit=0",  # 422
    "/events?after=x&since=yesterday",
    "/events?q=hello",  # 400: no full-text index
    "/events?topic=%74",  # percent-encoded
    "/stats?x=1",
    "/topics",
]


def answers_of(url: str) -> list[tuple[int, str, str | None, bytes]]:
    """(status, content type, Link, body) of each of QUERIES, each on a fresh connection."""
    seen = []
    for query in QUERIES:
        with connected(url) as sock:
            sock.sendall(get(query))
            status, headers, body = Answers(sock).next()
        if query.startswith("/stats"):
            body = re.sub(rb'"uptime":[\d.]+', b'"uptime":0', body)
        seen.append((status, headers["content-type"], headers.get("link"), body))
    return seen


def test_the_read_process_answers_as_the_server_does(tmp_path: Path) -> None:
    events = [event("t", f"e{i}", payload={"n": i}) for i in range(3)] + [event("u", "e0")]
    with running_server(tmp_path, "--read-process", "false") as server:
        assert httpx.post(f"{server.url}/publish", json=events).status_code == 200
        own = answers_of(server.url)
        assert server.terminate() == 0
    with running_server(tmp_path) as server:
        read_pid(server)
        by_process = answers_of(server.url)
        # Its requests are in the server's /metrics (each told after its answer).
        counted = 'duration_seconds_count{method="GET",route="/events"} 7.0'
        wait_for(lambda: counted in httpx.get(f"{server.url}/metrics").text, "the count")
        assert server.terminate() == 0
    assert [status for status, *_ in own] == [200, 200, 200, 422, 422, 400, 200, 200, 200]
    assert by_process == own


def test_with_read_token_the_read_process_refuses_without_it(tmp_path: Path) -> None:
    env = {"AGGREGATOR_READ_TOKEN": "sesame"}
    with running_server(tmp_path, env=env) as server:
        read_pid(server)
        with connected(server.url) as sock:
            answers = Answers(sock)
            sock.sendall(get("/events") + get("/events", "Authorization: Bearer sesame"))
            refused, allowed = answers.next(), answers.next()
        assert (refused[0], json.loads(refused[2])["error"]) == (401, "unauthorized")
        assert (allowed[0], json.loads(allowed[2])) == (200, [])
        assert server.terminate() == 0


def _slice(sched: Path) -> int:
    """A task's time slice in ns, from its ``/proc/…/sched`` (Linux 6.12 and later)."""
    found = re.search(r"^se\.slice\s*:\s*(\d+)$", sched.read_text(), re.MULTILINE)
    assert found is not None, sched.read_text()
    return int(found.group(1))


def test_the_read_process_and_all_its_threads_run_with_short_time_slices(tmp_path: Path) -> None:
    """Its reads wait less for a core under ingest (docs/benchmarks.md); the server keeps the
    kernel's default, and the read process the niceness the server was started with."""
    nice = os.getpriority(os.PRIO_PROCESS, 0) + 3
    server = ServerProcess(
        ["--port", "0", "--data-dir", str(tmp_path)],
        command=["nice", "-n", "3", sys.executable, "-m", "aggregator"],
    )
    try:
        server.wait_ready()
        reader = read_pid(server)
        with httpx.Client() as client:  # a read: a reader thread has run it
            assert client.get(f"{server.url}/events").status_code == 200
        tasks = list(Path(f"/proc/{reader}/task").iterdir())
        assert len(tasks) >= 2, tasks
        assert {_slice(task / "sched") for task in tasks} == {SLICE_NS}
        assert _slice(Path(f"/proc/{server.proc.pid}/sched")) != SLICE_NS
        assert os.getpriority(os.PRIO_PROCESS, reader) == nice
        assert os.getpriority(os.PRIO_PROCESS, server.proc.pid) == nice
    finally:
        server.kill()


def test_when_the_read_process_dies_the_server_answers_reads_and_starts_another(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path) as server:
        reader = read_pid(server)
        with connected(server.url) as sock:  # a connection the read process holds
            sock.sendall(get("/stats"))
            assert Answers(sock).next()[0] == 200
            os.kill(reader, signal.SIGKILL)
            assert wait_exit(reader, 10)
            assert sock.recv(1) == b""  # its connections end with it
        wait_for(lambda: "the read process ended" in server.log(), "the server to notice")
        with connected(server.url) as sock:
            sock.sendall(get("/events") + get("/stats"))
            answers = Answers(sock)
            assert [answers.next()[0], answers.next()[0]] == [200, 200]
        # Another starts, and answers: the server is stopped while it does.
        wait_for(lambda: len(READ_PROCESS.findall(server.log())) == 2, "another read process")
        assert int(READ_PROCESS.findall(server.log())[1]) != reader
        with connected(server.url) as sock:
            answers = Answers(sock)
            sock.sendall(get("/stats"))
            assert answers.next()[0] == 200
            with stopped(server.proc.pid):
                sock.sendall(get("/topics"))
                assert answers.next()[0] == 200
        assert server.terminate() == 0


def test_a_read_process_that_takes_no_connections_holds_at_most_a_few(tmp_path: Path) -> None:
    """A stopped (hung) read process: the server hands it at most MAX_PENDING connections,
    then answers reads itself; once it goes on, it answers those it holds."""
    with running_server(tmp_path) as server:
        reader = read_pid(server)
        os.kill(reader, signal.SIGSTOP)
        try:
            with ExitStack() as stack:
                socks = [stack.enter_context(connected(server.url)) for _ in range(3 * MAX_PENDING)]
                for sock in socks:
                    sock.sendall(get("/stats"))
                answered, held = [], []
                deadline = time.monotonic() + 3  # a bound: the server answers in milliseconds
                for sock in socks:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    try:
                        answered.append(Answers(sock).next()[0])
                    except TimeoutError:
                        held.append(sock)
                assert len(held) == MAX_PENDING
                assert answered == [200] * 2 * MAX_PENDING
                os.kill(reader, signal.SIGCONT)
                for sock in held:
                    sock.settimeout(10)
                    assert Answers(sock).next()[0] == 200
        finally:
            os.kill(reader, signal.SIGCONT)
        assert server.terminate() == 0


def test_the_read_process_ends_with_the_server(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        reader = read_pid(server)
        server.kill()  # SIGKILL: the server says nothing
        assert wait_exit(reader, 10)


def test_sigterm_closes_the_read_process_connections_and_exits_0(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        reader = read_pid(server)
        with connected(server.url) as idle, connected(server.url) as pipelined:
            idle.sendall(get("/stats"))
            assert Answers(idle).next()[0] == 200
            # Idle in the read process after two pipelined answers.
            pipelined.sendall(get("/stats") + get("/topics"))
            answers = Answers(pipelined)
            assert [answers.next()[0], answers.next()[0]] == [200, 200]
            assert server.terminate() == 0
            assert wait_exit(reader, 1)
            assert idle.recv(1) == b""
            assert pipelined.recv(1) == b""


class _Ended:
    """A process that has exited: what ``ReadSide`` asks of one once its messages end."""

    pid = 0
    returncode = 0

    async def wait(self) -> int:
        return 0


@pytest.mark.trio
async def test_what_the_read_process_tells_reaches_the_servers_metrics() -> None:
    observed: list[tuple[str, str, float]] = []
    incidents: list[str] = []
    adopted: list[tuple[bytes, int]] = []
    start = Start(Config(), 0.0)
    side = ReadSide(start, lambda *seen: observed.append(seen), incidents.append)
    ours, theirs = handoff.pair()
    server, reader = handoff.End(ours), handoff.End(theirs)
    client, kept = socket.socketpair()
    with client, kept:
        await reader.send(handoff.READY)
        await reader.send(handoff.OBSERVED, msgspec.json.encode(Observed("GET", "/events", 0.5)))
        await reader.send(handoff.INCIDENT, b"route")
        await reader.send(handoff.CONNECTION, handoff.handed(7, b"POST /publish"), kept.fileno())
        reader.close()
        process = cast(trio.Process, _Ended())
        await side._serve(
            server,
            lambda sock, prefix, served: (adopted.append((prefix, served)), sock.close()),
            process,
        )
    server.close()
    assert (observed, incidents, adopted) == (
        [("GET", "/events", 0.5)],
        ["route"],
        [(b"POST /publish", 7)],
    )


@pytest.mark.parametrize(
    ("head", "served"),
    [
        (get("/events?topic=a"), True),
        (get("/stats"), True),
        (get("/topics"), True),
        (b"GET /events HTTP/1.0\r\n\r\n", True),
        (b"GET /events HTTP/1.1\nHost: x\n\n", True),  # bare LF line ends
        (get("/livez"), False),
        (get("/eventsx"), False),
        (get("/events/"), False),
        (get("/%65vents"), False),  # percent-encoded: the server's to route
        (get("http://x/events"), False),  # absolute form
        (b"POST /events HTTP/1.1\r\nHost: x\r\n\r\n", False),
        (b"HEAD /events HTTP/1.1\r\nHost: x\r\n\r\n", False),
        (get("/events", "Content-Length: 3"), False),  # a body
        (get("/events", "Transfer-Encoding: chunked"), False),
        (get("/events", "Upgrade: websocket", "Connection: upgrade"), False),
        (get("/events", "Expect: 100-continue"), False),
        (b"GET /events HTTP/1.1\r\n\r\n", False),  # no Host: the server refuses it
        (b"GET /events HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", False),
    ],
)
def test_which_requests_the_read_process_answers(head: bytes, served: bool) -> None:
    assert (_servable(head) is not None) is served


@pytest.mark.parametrize(
    ("first", "read"),
    [
        (b"GET /events?topic=a HTTP/1.1\r\n", True),
        (b"GET /events HTTP/1.1\r\n", True),
        (b"GET /stats HTTP/1.1", True),
        (b"GET /topics?", True),
        (b"GET /events", False),  # not yet known: the server keeps it
        (b"GET /eventsx HTTP/1.1", False),
        (b"POST /events HTTP/1.1", False),
        (b"GET /livez HTTP/1.1", False),
    ],
)
def test_which_connections_go_to_the_read_process(first: bytes, read: bool) -> None:
    assert opens_with_read(first) is read


LENGTH_2 = [(b"content-length", b"2")]


class _Refusing:
    """A read side that records what it is offered and takes nothing (``ReadSide.take``)."""

    def __init__(self) -> None:
        self.offered: list[bytes] = []
        self.spare = None  # no descriptors kept for connections handed back

    def take(self, sock: socket.socket, data: bytes, served: int) -> bool:
        self.offered.append(data)
        return False


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": LENGTH_2})
    await send({"type": "http.response.body", "body": b"ok"})


def _server_with(reads: _Refusing) -> HttpServer:
    """The server's front on a free port, answering ``_ok``, with ``reads`` as its read side."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    return HttpServer(
        _ok,
        config,
        Incidents(),
        send_timeout=5,
        max_body_bytes=2**20,
        reads=reads,  # type: ignore[arg-type]
    )


@pytest.mark.trio
async def test_a_connection_handed_back_is_not_offered_its_refused_request_again() -> None:
    """The read process hands back a ``GET /events`` it does not serve (here with ``Expect``),
    with the bytes it read. Offered them again, it took the connection again: the connection
    bounced between the processes for good, unanswered, each process at a core."""
    reads = _Refusing()
    server = _server_with(reads)
    head = b"GET /events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = trio.socket.socket()
        await client.connect(listener.getsockname())
        accepted, _ = listener.accept()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        server.adopt(accepted, head)  # as the read process hands it back
        answer = b""
        with trio.fail_after(10):
            while b"\r\n\r\nok" not in answer:
                answer += await client.recv(4096)
        client.close()
        await server.stop()
        with trio.fail_after(10):
            await server.wait_closed()
        nursery.cancel_scope.cancel()
    assert reads.offered == []
    assert b"HTTP/1.1 200" in answer


@contextmanager
def _no_new_descriptor() -> Iterator[None]:
    """This process cannot open one more descriptor (as at ``ulimit -n``) until the block ends."""
    lowest_free = os.dup(0)  # the next descriptor's number
    os.close(lowest_free)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.trio
async def test_damage_is_told_to_the_server_even_when_the_pairs_queue_is_full() -> None:
    """The read process told the server of damage without waiting: with the pair's queue full
    (a busy server), the message was lost, and the server wrote on to the damaged store."""
    ours, theirs = handoff.pair()
    server, reader = End(ours), End(theirs)
    try:
        filled = 0
        while reader.send_now(handoff.OBSERVED, b"x" * 1024):
            filled += 1
        _damaged(reader, StoreDamaged("page 7 is corrupt", "/data/aggregator.sqlite3"))
        kinds = []
        with trio.fail_after(10):
            while len(kinds) < filled + 1:
                message = await server.receive()
                assert message is not None
                kinds.append(message.kind)
        assert kinds == [handoff.OBSERVED] * filled + [handoff.DAMAGED]
    finally:
        server.close()
        reader.close()


@pytest.mark.trio
async def test_sends_of_several_tasks_wait_their_turn_when_the_pairs_queue_is_full() -> None:
    """Two connections of the read process ending while the server is busy (the pair's queue
    full) both waited to send RELEASED: trio let one task wait to write the socket and raised
    BusyResourceError in the other, which ended the read process and every read it answered."""
    ours, theirs = handoff.pair()
    server, reader = End(ours), End(theirs)
    try:
        filled = 0
        while reader.send_now(handoff.OBSERVED, b"x"):
            filled += 1
        kinds: list[bytes] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(reader.send, handoff.RELEASED)
                await trio.testing.wait_all_tasks_blocked()
                while len(kinds) < filled + 3:
                    message = await server.receive()
                    assert message is not None
                    kinds.append(message.kind)
        assert kinds == [handoff.OBSERVED] * filled + [handoff.RELEASED] * 3
    finally:
        server.close()
        reader.close()


@pytest.mark.trio
async def test_a_connection_handed_back_waits_for_a_descriptor_when_no_spare_is_left() -> None:
    """The server at its descriptor limit, its spares all lent: each further connection the
    read process handed back was closed by the kernel, unanswered (22 of 30 publishes handed
    back at once). It now waits in the pair's queue until a descriptor is free."""
    ours, theirs = handoff.pair()
    server, reader = End(ours), End(theirs)
    spare = handoff.Spare(1)
    spare.refill()
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        for (_, connection), payload in zip(pairs, (b"a", b"b"), strict=True):
            assert reader.send_now(CONNECTION, payload, connection.fileno())
            connection.close()
        with _no_new_descriptor():
            first = await server.receive(spare)  # the spare's descriptor
            assert first is not None and first.connection is not None
            second: list[handoff.Message | None] = []

            async def receive() -> None:
                second.append(await server.receive(spare))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                assert not second  # no descriptor: it waits, not lost
                first.connection.close()  # one is free again
        assert second[0] is not None
        assert (second[0].payload, second[0].connection is not None) == (b"b", True)
        assert second[0].connection is not None
        second[0].connection.close()
    finally:
        spare.close()
        server.close()
        reader.close()
        for client, connection in pairs:
            client.close()
            connection.close()


@pytest.mark.trio
async def test_damage_met_opening_the_readers_is_told_to_the_server(tmp_path: Path) -> None:
    """A read process opens its readers at start, each reading the store's first page: damaged
    there, it ended (exit 1) before any read, untold, started again and again, while the server
    went on taking publishes into the damaged store. It tells the server first."""
    (tmp_path / "aggregator.sqlite3").write_bytes(b"not a database, " * 256)
    ours, theirs = handoff.pair()
    server = End(ours)
    try:
        await server.send(handoff.CONFIG, pickle.dumps(Start(Config(data_dir=tmp_path), 0.0)))
        with pytest.raises(StoreDamaged), trio.fail_after(10):
            await reads._run(theirs, None)
        theirs.close()  # the process's end: what it sent before is still read
        message = await server.receive()
        assert message is not None and message.kind == handoff.DAMAGED
        detail, where = msgspec.json.decode(message.payload)
        assert "not a database" in detail and where.endswith("aggregator.sqlite3")
    finally:
        server.close()
        theirs.close()


@pytest.mark.trio
async def test_a_connection_handed_over_at_the_descriptor_limit_is_lost_alone() -> None:
    """At its descriptor limit, a process is handed a connection without it (the kernel closes
    it: ``MSG_CTRUNC``). ``End.receive`` raised, which ended the whole process: the server's,
    every connection with it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sending, receiving = End(ours), End(theirs)
    client, connection = socket.socketpair()
    try:
        assert sending.send_now(CONNECTION, b"GET /", connection.fileno())
        connection.close()
        with _no_new_descriptor():
            message = await receiving.receive()
        assert message is not None
        assert (message.kind, message.payload, message.connection) == (CONNECTION, b"GET /", None)
        assert client.recv(1) == b""  # that client sees its connection end
        # and the hand-off goes on
        assert sending.send_now(CONNECTION, b"next")
        message = await receiving.receive()
        assert message is not None and message.payload == b"next"
    finally:
        sending.close()
        receiving.close()
        client.close()


@pytest.mark.trio
async def test_a_connection_handed_back_once_the_server_stopped_is_closed() -> None:
    """The read process hands a connection back before it sees its stop; the server's
    connections have all ended meanwhile. Starting it in their closed nursery raised, which
    stopped the server with exit status 1 on SIGTERM."""
    server = _server_with(_Refusing())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        await server.stop()
    client, accepted = socket.socketpair()
    with client:
        server.adopt(accepted, b"POST /publish HTTP/1.1\r\n")
        assert client.recv(1) == b""  # closed, not served


@pytest.mark.trio
async def test_a_head_the_read_process_receives_in_several_packets_is_answered(
    tmp_path: Path,
) -> None:
    """The read process waited for the rest of a head under one cancel scope, entered again at
    each receive: the second receive of one head raised, and the connection was closed
    unanswered (a head over two TCP segments, or written line by line)."""
    config = Config(data_dir=tmp_path, port=0)
    reads = ReadServer(_ok, config, None, Incidents())  # type: ignore[arg-type]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = trio.socket.socket()
        await client.connect(listener.getsockname())
        accepted, _ = listener.accept()
    stream = PeerStream(trio.SocketStream(trio.socket.from_stdlib_socket(accepted)), 5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reads._serve_requests, stream, bytearray(b"GET /stats HTTP/1.1\r\n"))
        for part in (b"Host: x\r\n", b"Accept: */*\r\n", b"\r\n"):
            await trio.testing.wait_all_tasks_blocked()  # it waits for more of the head
            await client.send(part)
        answer = b""
        with trio.fail_after(10):
            while b"\r\n\r\nok" not in answer:
                answer += await client.recv(4096)
        client.close()  # and it returns
    stream.abort()
    assert answer.startswith(b"HTTP/1.1 200")


@pytest.mark.trio
async def test_a_read_process_that_ends_before_it_is_sent_anything_is_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read process that dies at start (a broken install, the OOM killer) may be gone before
    the server's first send to it, the more likely the busier the server's loop: that send
    raised BrokenPipeError out of ``ReadSide.run``, and the server exited 1."""
    real = trio.lowlevel.open_process
    starts: list[int] = []
    thrice = trio.Event()

    async def ends_at_once(command: list[str], **kwargs: Any) -> trio.Process:
        process = await real(["true"], **kwargs)
        await process.wait()  # gone before the server sends it its config
        starts.append(process.returncode)
        if len(starts) == 3:
            thrice.set()
        return process

    monkeypatch.setattr(trio.lowlevel, "open_process", ends_at_once)
    monkeypatch.setattr(readside, "RESTART_SECONDS", (0.0, 0.0))
    side = ReadSide(Start(Config(), 0.0), lambda *seen: None, lambda stage: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(side.run, lambda sock, prefix, served: sock.close())
        with trio.fail_after(10):
            await thrice.wait()  # each ended, and another was started
            await side.stop()
    assert starts[:3] == [0, 0, 0]


# The two corners where the read process answered otherwise than the server's own front
# (docs/design.md, "Where it differs from the server's front"): each test sends the same bytes
# to a server with the read process and to one without, and compares what comes back.
MAX_REQUESTS = hypercorn.config.Config().keep_alive_max_requests  # 1,000: service.py keeps it
_DATE = re.compile(rb"\r\ndate: [^\r]*", re.IGNORECASE)


def _raw_answer(sock: socket.socket, buffer: bytearray) -> bytes:
    """The next whole answer (head and its Content-Length of body) from ``buffer`` and
    ``sock``, its Date header blanked."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        data = sock.recv(65536)
        assert data, f"the connection ended; unread: {bytes(buffer)!r}"
        buffer += data
    length = int(re.search(rb"\r\ncontent-length: *(\d+)", buffer[:end], re.I).group(1))  # type: ignore[union-attr]
    while len(buffer) < end + 4 + length:
        data = sock.recv(65536)
        assert data, f"the connection ended; unread: {bytes(buffer)!r}"
        buffer += data
    answer = bytes(buffer[: end + 4 + length])
    del buffer[: end + 4 + length]
    return _DATE.sub(b"\r\ndate: -", answer)


def _the_end(sock: socket.socket, buffer: bytearray) -> str:
    """How the connection goes on once every answer expected was read: "closed" (and nothing
    more was sent), "reset", or "open" (still open after 5 s)."""
    sock.settimeout(5)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return "open"
    except ConnectionResetError:
        return "reset"
    return "closed" if not data and not buffer else f"more: {bytes(buffer) + data!r}"


def _requests_until_the_limit(
    url: str, servers: frozenset[int], stop: int | None = None
) -> tuple[list[bytes], str]:
    """``MAX_REQUESTS`` requests on one connection, one at a time, each answered before the
    next: ``GET /livez`` (the server's) at the positions in ``servers`` (1 is the first),
    ``GET /topics`` (the read process's) at the others; the last is sent with one more read
    after it, in one write. The answers, and how the connection went on. ``stop``: a process
    stopped (SIGSTOP) from the first answer to the end."""
    answers = []
    buffer = bytearray()
    with connected(url) as sock, ExitStack() as stack:
        for number in range(1, MAX_REQUESTS + 1):
            request = get("/livez" if number in servers else "/topics")
            if number == MAX_REQUESTS:
                request += get("/topics")  # past the limit: not answered, by either
            sock.sendall(request)
            answers.append(_raw_answer(sock, buffer))
            if number == 1 and stop is not None:
                stack.enter_context(stopped(stop))
        return answers, _the_end(sock, buffer)


# Where the connection is when it reaches the limit: always in the read process; moved back and
# forth, and in the server at its last request; moved back and forth, and in the read process.
_ROUTES = (
    frozenset(),
    frozenset({300, 700, MAX_REQUESTS}),
    frozenset({300, 700, MAX_REQUESTS - 1}),
)


def test_a_connection_closes_after_as_many_requests_as_on_the_servers_own_front(
    tmp_path: Path,
) -> None:
    """hypercorn closes a connection after its ``keep_alive_max_requests``th request (that
    answer says ``Connection: close``). The read process went on answering, and a connection
    that moved between the processes began its count again in each: no bound at all. The count
    now goes with the connection, both ways."""
    with running_server(tmp_path, "--read-process", "false") as server:
        own = [_requests_until_the_limit(server.url, route) for route in _ROUTES]
        assert server.terminate() == 0
    with running_server(tmp_path) as server:
        read_pid(server)
        # Reads alone: the read process answers every one after the first (the server, which
        # handed it the connection, is stopped meanwhile) and closes the connection itself.
        by_process = [_requests_until_the_limit(server.url, _ROUTES[0], server.proc.pid)]
        by_process += [_requests_until_the_limit(server.url, route) for route in _ROUTES[1:]]
        assert server.terminate() == 0
    for (answers, end), route in zip(own, _ROUTES, strict=True):
        assert end == "closed", route
        assert [b"\r\nconnection: close\r\n" in answer.lower() for answer in answers] == [False] * (
            MAX_REQUESTS - 1
        ) + [True], route
    for route, seen, expected in zip(_ROUTES, by_process, own, strict=True):
        assert seen[1] == expected[1], route
        assert seen[0] == expected[0], route


_PARTS = [
    b"GET /stats HTTP/1.1\r\nHost: x\r\n",  # a head without its end
    b"GET /events?topic=a HTTP/1.1\r\nHo",
    b"GET /topics ",
    get("/topics") + b"GET /stats HTTP/1.1\r\n",  # a whole request, then part of the next
    get("/topics"),  # nothing after it: a plain close
    get("/topics") + b"\r\n",  # an empty line after it: h11 says 400 at the end too
]


def _half_closed(url: str, sent: bytes) -> tuple[bytes, str]:
    """What a client that sends ``sent`` and then half-closes (``SHUT_WR``) reads until the
    end, Date headers blanked; and how it ended."""
    with connected(url) as sock:
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while data := sock.recv(65536):
                received += data
            end = "closed"
        except ConnectionResetError:
            end = "reset"
        except TimeoutError:
            end = "open"
    return _DATE.sub(b"\r\ndate: -", received), end


def test_a_client_that_half_closes_in_a_head_is_answered_as_by_the_servers_own_front(
    tmp_path: Path,
) -> None:
    """A client that half-closes after part of a head gets hypercorn's 400 from the server (h11
    meets the end of the stream inside a request); the read process closed without a word."""
    with running_server(tmp_path, "--read-process", "false") as server:
        own = [_half_closed(server.url, sent) for sent in _PARTS]
        assert server.terminate() == 0
    with running_server(tmp_path) as server:
        read_pid(server)
        by_process = [_half_closed(server.url, sent) for sent in _PARTS]
        assert server.terminate() == 0
    assert [end for _, end in own] == ["closed"] * len(_PARTS)
    statuses = [re.findall(rb"HTTP/1.1 (\d+)", received) for received, _ in own]
    assert statuses == [[b"400"], [b"400"], [b"400"], [b"200", b"400"], [b"200"], [b"200", b"400"]]
    for sent, seen, expected in zip(_PARTS, by_process, own, strict=True):
        assert seen == expected, sent
