"""The HTTP front attacked as a whole (branch attack-front): framing a proxy could read otherwise
than this server, and a subscriber that reads slowly but steadily.

Real server processes and raw sockets, as in ``test_connections.py``.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx

from tests.support import event, running_server, wait_for
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
