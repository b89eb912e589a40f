"""The HTTP front attacked as a whole (branch attack-front): framing a proxy could read otherwise
than this server, and a subscriber that reads slowly but steadily.

Real server processes and raw sockets, as in ``test_connections.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from functools import partial
from pathlib import Path

import httpx

from tests.support import (
    READ_PROCESS,
    event,
    read_pid,
    running_server,
    server_under_file_limit,
    wait_exit,
    wait_for,
)
from tests.test_connections import assert_serving, connect, metric


def read_all(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout fails a
    server that keeps it open)."""
    out = b""
    while chunk := client.recv(65536):
        out += chunk
    return out


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    tmp_path: Path,
) -> None:
    """h11 read the body as chunked, ignored Content-Length and kept the connection open: a proxy
    that framed by Content-Length saw ``GET /stats`` as the body, this server as a second request
    (request smuggling). Now 400 naming both headers, the connection closed, nothing stored."""
    body = json.dumps(event()).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    smuggled = b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"
    with running_server(tmp_path) as server, connect(server.url) as client:
        client.sendall(
            b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
            % len(chunked)
            + chunked
            + smuggled
        )
        answer = read_all(client)
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), answer
        assert b"connection: close" in head.lower(), answer
        refusal = json.loads(rest)  # one answer: the smuggled request was not served
        assert refusal["error"] == "ambiguous_framing"
        assert "Transfer-Encoding and Content-Length" in refusal["message"]
        assert httpx.get(f"{server.url}/stats").json()["received"] == 0
        assert_serving(server)


def test_a_slow_but_reading_subscriber_is_not_cut_by_the_send_timeout(tmp_path: Path) -> None:
    """The send timeout bounded a whole ``send_all``: one event of 2 MB to a client reading
    steadily at about 400 KB/s took 5 s and the stream was cut at the 1 s send timeout, though
    the client never stopped reading. The timeout is now for the peer taking no data at all."""
    args = (
        "--send-timeout-seconds",
        "1",
        "--max-payload-bytes",
        str(3 * 1024 * 1024),
        "--max-body-bytes",
        str(8 * 1024 * 1024),
        "--heartbeat-seconds",
        "600",
    )
    with running_server(tmp_path, *args) as server, connect(server.url, rcvbuf=4096) as client:
        client.sendall(b"GET /subscribe HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: metric(server.url, "aggregator_subscribers_active") == 1, "the stream")
        big = [event(event_id=f"big-{n}", payload={"x": "y" * 2_000_000}) for n in range(2)]
        assert httpx.post(f"{server.url}/publish", json=big, timeout=60).status_code == 200
        received = 0
        ends = 0  # messages received whole (no heartbeat comes: 600 s)
        tail = b""
        while ends < 2:
            chunk = client.recv(65536)
            assert chunk, f"the stream was cut after {received} bytes:\n{server.log()}"
            received += len(chunk)
            ends += (tail + chunk).count(b"}\n\n")
            tail = chunk[-2:]
            time.sleep(0.005)  # sleep-ok: paces a slow reader (a few hundred KB/s), never stops
        assert_serving(server)


BAD_REQUESTS = [
    # (what is sent, the status, words the message must have)
    (
        b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
        400,
        "Content-Length",
    ),
    (b"GET /health HTTP/1.1\r\n\r\n", 400, "Host"),
    (
        b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
        431,
        "16384 bytes, the limit",
    ),
    (
        b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
        "Transfer-Encoding",
    ),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 50, 400, "HTTP/1.1"),
]


def test_requests_hypercorn_refuses_get_an_answer_that_names_what_is_wrong(
    tmp_path: Path,
) -> None:
    """h11's refusals (a request head it cannot parse, conflicting Content-Length, no Host, a head
    over hypercorn's 16 KiB, a Transfer-Encoding other than chunked) were answered by hypercorn
    with an empty body: now JSON naming what is wrong and the limit, the connection closed."""
    with running_server(tmp_path) as server:
        for sent, status, words in BAD_REQUESTS:
            with connect(server.url) as client:
                client.sendall(sent)
                head, _, rest = read_all(client).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 %d" % status), (sent[:60], head)
            assert b"connection: close" in head.lower(), head
            refusal = json.loads(rest)
            assert words in refusal["message"], (sent[:60], refusal)
        assert httpx.get(f"{server.url}/stats").json()["received"] == 0
        assert_serving(server)


def test_out_of_file_descriptors_is_logged_once_not_ten_times_a_second(tmp_path: Path) -> None:
    """Under a file limit of 64 and 150 idle connections, trio's accept loop logged an ERROR with
    a traceback every 0.1 s until the keep-alive timeout freed descriptors (about 50 in 5 s):
    now one line, then at most one a minute; the server serves again meanwhile."""
    server = server_under_file_limit(tmp_path, 64)
    clients = []
    try:
        server.wait_ready()
        read_pid(server)  # started: its start needs descriptors too (the next test)
        for _ in range(150):  # the backlog (100) holds what the server cannot accept
            clients.append(connect(server.url))
        wait_for(lambda: "cannot accept connections" in server.log(), "the fds exhausted")
        # Served once the keep-alive timeout (5 s) has closed idle connections.
        assert httpx.get(f"{server.url}/health", timeout=60).status_code == 200
        log = server.log()
        assert log.count("Too many open files") == 1, log
        assert "Traceback" not in log, log
    finally:
        for client in clients:
            client.close()
        server.kill()


def test_a_read_process_that_cannot_start_for_want_of_descriptors_is_started_later(
    tmp_path: Path,
) -> None:
    """Out of descriptors when the read process was (re)started, the server's socketpair
    raised EMFILE and the whole server exited 1: now that start fails, the server answers
    reads itself, and a later start succeeds once descriptors are free."""
    server = server_under_file_limit(tmp_path, 64)
    clients = []
    try:
        server.wait_ready()
        first = read_pid(server)
        for _ in range(150):  # every descriptor taken, the rest waiting in the backlog
            clients.append(connect(server.url))
        wait_for(lambda: "cannot accept connections" in server.log(), "the fds exhausted")
        # The two descriptors its end frees are accepted from the backlog within the 1 s
        # pause, so the next start meets EMFILE.
        os.kill(first, signal.SIGKILL)
        assert wait_exit(first, 10)
        wait_for(
            lambda: "could not start" in server.log() or server.proc.poll() is not None,
            "a start to fail",
        )
        assert server.proc.poll() is None, server.log()
        assert "could not start: [Errno 24] Too many open files" in server.log()
        for client in clients:
            client.close()
        wait_for(lambda: len(READ_PROCESS.findall(server.log())) == 2, "a later start", 60)
        assert int(READ_PROCESS.findall(server.log())[1]) != first
        assert httpx.get(f"{server.url}/events").json() == []
        assert server.terminate() == 0
    finally:
        for client in clients:
            client.close()
        server.kill()


def first_line(client: socket.socket) -> bytes:
    """The status line of the next answer on ``client`` (its whole answer read), or ``b""`` if
    the connection ended first."""
    data = b""
    while b"\r\n\r\n" not in data:
        if not (chunk := client.recv(65536)):
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )  # fmt: skip
    while len(body) < length:
        body += client.recv(65536)
    return head.split(b"\r\n")[0]


def test_reads_are_answered_while_the_read_process_is_at_its_descriptor_limit(
    tmp_path: Path,
) -> None:
    """The read process inherits the server's file limit: 90 keep-alive readers under 96 took
    every descriptor it had (it needs ~18 of its own), and each connection handed to it after
    that was closed by the kernel unanswered, though the server had descriptors to answer
    them. Now the server hands it no more connections than its limit leaves room for (64
    here), and answers the others itself (it has room for ~58)."""
    server = server_under_file_limit(tmp_path, 96, env={"AGGREGATOR_KEEP_ALIVE_SECONDS": "60"})
    clients = []
    request = b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        server.wait_ready()
        read_pid(server)
        for _ in range(90):
            clients.append(connect(server.url))
            clients[-1].sendall(request)
            assert first_line(clients[-1]) == b"HTTP/1.1 200 ", server.log()
        for _ in range(10):
            with connect(server.url) as client:
                client.sendall(request)
                assert first_line(client) == b"HTTP/1.1 200 ", server.log()
        assert "handed over was lost" not in server.log()
        assert server.terminate() == 0
    finally:
        for client in clients:
            client.close()
        server.kill()


def server_ends(port: int, names: list[tuple[str, int]]) -> int:
    """How many of the server's ends of the connections from ``names`` (the clients' addresses)
    the kernel still has (/proc/net/tcp): once both ends have closed, it has none."""
    ours = {name[1] for name in names}
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote = line.split()[1:3]
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) in ours:
            count += 1
    return count


def test_a_connection_its_client_closed_between_requests_is_closed_at_once(
    tmp_path: Path,
) -> None:
    """hypercorn closed a connection whose client had closed it between requests only when its
    keep-alive timer ran out: the descriptor stayed taken (CLOSE-WAIT) for the whole
    ``AGGREGATOR_KEEP_ALIVE_SECONDS``, and a server at its file limit accepted nobody
    meanwhile although every client had gone. Now it is closed when the close is read."""
    publish = json.dumps(event()).encode()
    request = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(publish),
        publish,
    )
    with running_server(tmp_path, env={"AGGREGATOR_KEEP_ALIVE_SECONDS": "3600"}) as server:
        port = int(server.url.rsplit(":", 1)[1])
        for sends in (False, True):  # one that sent nothing, one after an answer
            clients = [connect(server.url) for _ in range(10)]
            for client in clients:
                if sends:
                    client.sendall(request)
                    assert first_line(client) == b"HTTP/1.1 200 "
            names = [client.getsockname() for client in clients]
            for client in clients:
                client.close()
            wait_for(partial(lambda names: server_ends(port, names) == 0, names), "closed", 10)
        assert_serving(server)


def test_reads_out_of_descriptors_before_the_first_request_are_answered(tmp_path: Path) -> None:
    """Out of descriptors before the server's first read (idle connections took them all):
    the first request through the routes imported werkzeug's "idna" codec, which failed, so
    every route (/health, /stats, /metrics) answered 500 for as long as that lasted; and SQLite
    opened each reader's WAL at its first read, so every read was then 503 "unable to open
    database file", the store being sound. Both are opened at start now."""
    server = server_under_file_limit(
        tmp_path,
        64,
        env={"AGGREGATOR_KEEP_ALIVE_SECONDS": "60", "AGGREGATOR_READ_PROCESS": "false"},
    )
    clients = []
    try:
        server.wait_ready()
        with connect(server.url) as client:
            for _ in range(100):  # the backlog (100) holds what the server cannot accept
                clients.append(connect(server.url))
            wait_for(lambda: "cannot accept connections" in server.log(), "the fds exhausted")
            for path in (b"/health", b"/stats", b"/events", b"/topics", b"/metrics"):
                client.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                assert first_line(client) == b"HTTP/1.1 200 ", (path, server.log())
        assert "internal error" not in server.log()
    finally:
        for client in clients:
            client.close()
        server.kill()


def test_a_connection_handed_back_to_a_server_at_its_descriptor_limit_is_served(
    tmp_path: Path,
) -> None:
    """A keep-alive client that reads, then publishes: the read process hands its connection
    back, and a server whose accept loop had taken every descriptor was passed it without one
    (the kernel closed it: the publish unanswered, 6 of 6 such clients lost within 8 s). The
    server keeps spare descriptors for them, refilled before it accepts."""
    server = server_under_file_limit(tmp_path, 64, env={"AGGREGATOR_KEEP_ALIVE_SECONDS": "60"})
    idle = []
    try:
        server.wait_ready()
        read_pid(server)
        clients = [connect(server.url) for _ in range(4)]
        for _ in range(100):  # the backlog (100) holds what the server cannot accept
            idle.append(connect(server.url))
        wait_for(lambda: "cannot accept connections" in server.log(), "the fds exhausted")
        for n in range(10):
            for k, client in enumerate(clients):
                client.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
                assert first_line(client) == b"HTTP/1.1 200 ", server.log()
                body = json.dumps(event(event_id=f"{n}-{k}")).encode()
                client.sendall(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                               % (len(body), body))  # fmt: skip
                assert first_line(client) == b"HTTP/1.1 200 ", server.log()
        assert "handed over was lost" not in server.log()
        for client in clients:
            client.close()
    finally:
        for client in idle:
            client.close()
        server.kill()


def test_the_spare_descriptors_leave_a_small_limit_room_to_serve(tmp_path: Path) -> None:
    """The spares for connections handed back take at most an eighth of what is free at start:
    eight of them under a limit of 32 left the server none to accept a connection with (it
    needs about 30 of its own, the read process started or not)."""
    server = server_under_file_limit(tmp_path, 32)
    try:
        server.wait_ready()
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        assert httpx.get(f"{server.url}/stats", timeout=10).status_code == 200
    finally:
        server.kill()
