"""What arrives beside plain HTTP/1.1 requests: WebSocket handshakes, HTTP/2, and failures
outside every route. Each must answer (or refuse) its own request, and nothing else.

Found by attacking issue 18's fault isolation at the layers around the routes: a WebSocket
handshake logged two tracebacks and got a bare 500; one HTTP/2 stream with a byte above 0x7f in
its ``:path`` stopped the whole server (hypercorn 0.18 decodes it as ASCII in the connection's
own task, outside any request).
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trio

from aggregator.front import auth
from aggregator.front.guard import Guard
from aggregator.incidents import Incidents
from tests.conftest import open_server
from tests.support import ServerProcess, event, running_server

HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_response(client: socket.socket) -> bytes:
    """One response: the head, and the body its Content-Length announces."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += client.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += client.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("data")) as server:
        yield server


def assert_serving(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/health").status_code == 200
        assert http.post("/publish", json=event(event_id="still")).status_code == 200
    assert server.proc.poll() is None


@pytest.mark.parametrize("path", ["/events", "/subscribe", "/publish", "/nowhere"])
def test_a_websocket_handshake_is_refused_with_a_400(server: ServerProcess, path: str) -> None:
    with connect(server) as client:
        client.sendall(HANDSHAKE.format(path=path).encode())
        response = read_response(client)
    assert response.startswith(b"HTTP/1.1 400 "), response
    assert b'"error":"websocket_unsupported"' in response
    assert b"GET /subscribe" in response  # what to use instead
    assert_serving(server)
    assert not [line for line in server.lines if " ERROR " in line], server.log()


def h2_stream(server: ServerProcess, headers: list[tuple[bytes, bytes]]) -> list[Any]:
    """Send one HTTP/2 stream (prior knowledge, no TLS) and return the connection's events."""
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False
        )
    )
    connection.initiate_connection()
    connection.send_headers(1, headers, end_stream=True)
    events: list[Any] = []
    with connect(server) as client:
        client.sendall(connection.data_to_send())
        while not any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
            data = client.recv(65536)
            if not data:
                break
            events += connection.receive_data(data)
    return events


def request_headers(method: bytes, path: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":path", path), (b":scheme", b"http"), (b":authority", b"x")]


@pytest.mark.parametrize(
    "headers",
    [
        request_headers(b"GET", "/événements".encode()),
        request_headers(b"G\xc9T", b"/events"),
        [(b":method", b"CONNECT"), (b":authority", b"x:1")],
        [*request_headers(b"CONNECT", "/é".encode()), (b":protocol", b"websocket")],
        request_headers(b"GET", b"/stats"),
    ],
    ids=["non-ascii-path", "non-ascii-method", "connect", "extended-connect", "plain"],
)
def test_http2_streams_are_refused_and_none_stops_the_server(
    server: ServerProcess, headers: list[tuple[bytes, bytes]]
) -> None:
    """Each of the first four stopped the whole server: HTTP/2 is refused altogether now (no
    stream may open), so what hypercorn's HTTP/2 code does with a stream no longer matters."""
    events = h2_stream(server, headers)
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    assert_serving(server)


@pytest.mark.trio
async def test_a_bug_outside_the_routes_is_a_500_naming_a_request_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Raised in the token check (or Quart's request context), outside every route's error
    handler: hypercorn answered an empty 500 and logged it itself, with no id and no count."""
    real = auth.Tokens.required

    def buggy(self: auth.Tokens, path: str) -> tuple[str, str] | None:
        if path == "/stats":
            raise RuntimeError("a bug in the token check")
        return real(self, path)

    monkeypatch.setattr(auth.Tokens, "required", buggy)
    with trio.fail_after(20), caplog.at_level(logging.INFO):
        async with open_server(tmp_path) as server:
            broken = await server.client.get("/stats")
            health = await server.client.get("/health")
            metrics = (await server.client.get("/metrics")).text
    assert broken.status_code == 500
    assert broken.json()["error"] == "internal"
    found = re.search(r"request id ([0-9a-f]{12})", broken.json()["message"])
    assert found is not None and "nothing of the request was stored" in broken.json()["message"]
    assert health.status_code == 200
    assert 'aggregator_internal_errors_total{stage="route"} 1.0' in metrics
    logged = [r for r in caplog.records if found.group(1) in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert not [
        r for r in caplog.records if r.name.startswith("hypercorn") and r.levelno >= logging.ERROR
    ]


@pytest.mark.trio
async def test_a_connection_that_ends_under_an_answer_is_not_an_internal_error() -> None:
    """hypercorn refuses a message when it is closing the connection (a client that broke its
    framing mid-body): that is the client's doing, not an incident."""
    counted: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def closing(message: Any) -> None:
        raise trio.BusyResourceError("another task is currently sending data")

    scope = {"type": "http", "method": "PUT", "path": "/publish"}
    with trio.fail_after(5):
        await Guard(app, Incidents(counted.append))(scope, None, closing)
    assert counted == []
