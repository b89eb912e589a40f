"""Bearer tokens (off by default), and slow or idle connections cut by the configured timeouts."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import open_server
from tests.support import event

pytestmark = pytest.mark.trio
PUBLISH, READ = "publish-secret-1", "read-secret-2"


async def test_tokens_guard_publish_and_reads_but_not_health(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(30):
        async with open_server(tmp_path, publish_token=PUBLISH, read_token=READ) as server:
            http = server.client
            missing = await http.post("/publish", json=event())
            wrong = await http.post(
                "/publish", json=event(), headers={"Authorization": f"Bearer {READ}"}
            )
            ok = await http.post(
                "/publish", json=event(), headers={"Authorization": f"Bearer {PUBLISH}"}
            )
            reads = [await http.get(p) for p in ("/events", "/stats")]
            authed = [
                await http.get(p, headers={"Authorization": f"bearer {READ}"})
                for p in ("/events", "/stats")
            ]
            health = await http.get("/health")
            spec = await http.get("/openapi.json")
            scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {READ}"})
            metrics = scraped.text
    for response in (missing, wrong, *reads):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"] == "unauthorized"
    assert "AGGREGATOR_PUBLISH_TOKEN" in missing.json()["message"]
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert ok.status_code == 200 and ok.json()["stored"] == 1
    assert [r.status_code for r in authed] == [200, 200]
    assert (health.status_code, spec.status_code) == (200, 200)
    assert PUBLISH not in caplog.text and READ not in caplog.text
    # Counted with the other refused publishes; logged at DEBUG only (a dashboard without its
    # token added two INFO lines per refresh).
    assert (
        'aggregator_publish_rejected_total{protocol="publish",reason="unauthorized"} 2.0' in metrics
    )
    ours = [r for r in caplog.records if r.name.startswith("aggregator")]
    assert [r.levelno for r in ours if "401" in r.getMessage()] == [logging.DEBUG] * 4


async def test_tokens_are_off_by_default(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path) as server:
            assert (await server.publish(event())).status_code == 200
            assert (await server.client.get("/stats")).status_code == 200


async def test_slowloris_and_idle_connections_are_cut_and_others_served(tmp_path: Path) -> None:
    settings = {"read_timeout_seconds": 0.5, "keep_alive_seconds": 0.5}
    with trio.fail_after(30):
        async with open_server(tmp_path, **settings) as server:
            port = server.running.port
            idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(50)]
            slow = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(20)]
            for stream in slow:  # headers never finished
                await stream.send_all(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Le")
            body = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(6)]
            for stream, route in zip(
                body, ["POST /publish", "GET /stats", "POST /events"] * 2, strict=True
            ):
                # Headers done, body never finished, whether or not the route reads a body.
                await stream.send_all(
                    route.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[{"
                )
            # Others are served while those hang.
            assert (await server.publish(event(event_id="served"))).status_code == 200
            for stream in [*idle, *slow]:  # the server closes them: EOF, no response
                assert await stream.receive_some(1000) == b""
            for stream, route in zip(
                body, ["POST /publish", "GET /stats", "POST /events"] * 2, strict=True
            ):
                # A slow body gets 408, saying it closes, then the close; only a publish speaks
                # of storing (a GET's 408 said "nothing was stored").
                data = b""
                while chunk := await stream.receive_some(1000):
                    data += chunk
                assert data.startswith(b"HTTP/1.1 408"), data
                assert b"\r\nconnection: close\r\n" in data.lower(), data
                if route == "POST /publish":
                    assert b"nothing was stored" in data, data
                else:
                    assert b"stored" not in data and f"{route} was not served".encode() in data
            # A new connection: the client's pooled one was idle past keep_alive_seconds too.
            async with httpx.AsyncClient(base_url=server.running.url) as fresh:
                assert (await fresh.get("/health")).status_code == 200
            for stream in [*idle, *slow, *body]:
                await stream.aclose()


@pytest.mark.parametrize("request_line", ["GET /health", "GET /stats", "GET /nothing"])
async def test_keep_alive_connections_close_when_idle_after_any_route(
    tmp_path: Path, request_line: str
) -> None:
    """Quart-trio could cancel the last message of its response, so hypercorn never saw the
    response end and kept the connection open: it never counted as idle."""
    with trio.fail_after(30):
        async with open_server(tmp_path, keep_alive_seconds=0.3) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.running.port)
            async with stream:
                await stream.send_all(request_line.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                with trio.fail_after(5):  # keep-alive is 0.3 s: EOF well within this
                    while chunk := await stream.receive_some(65536):
                        data += chunk
    assert data.startswith(b"HTTP/1.1 ") and b"\r\n\r\n{" in data
