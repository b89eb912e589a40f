"""The OTLP and Loki doors with real Node.js clients against a real server process: the
OpenTelemetry JS SDK's ``@opentelemetry/exporter-logs-otlp-http`` (JSON) and ``-proto``
(protobuf), and ``winston-loki`` (protobuf + snappy, and JSON). ``tests/node/clients.cjs`` drives
them; each sends every batch twice. The packages are installed from ``package-lock.json`` into
``tests/node/node_modules`` on first use (``.ci/run`` installs Debian's node and npm)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.shippers import Door, fill_disk, shipper_server
from tests.support import ROOT, wait_for

NODE_DIR = ROOT / "tests" / "node"


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed (Debian: apt-get install nodejs npm)"
    if not (NODE_DIR / "node_modules" / ".package-lock.json").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
            timeout=600,
        )
    return node


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with shipper_server(tmp_path_factory.mktemp("node")) as door:
        yield door
        door.assert_healthy()


def run_client(node: str, mode: str, door: Door, name: str) -> dict[str, object]:
    done = subprocess.run(
        [node, str(NODE_DIR / "clients.cjs"), mode, door.url, name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    said: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return said


@pytest.mark.parametrize("encoding", ["http", "proto"])
def test_opentelemetry_js_exporter_records_are_stored_once(
    node: str, door: Door, encoding: str
) -> None:
    service = f"node-otlp-{encoding}"
    before = door.counters()
    assert run_client(node, f"otlp-{encoding}", door, service) == {"results": [0] * 6}
    assert door.delta(before) == [6, 3, 3]
    # The JS SDK's simple processor exports each record on its own, concurrently: any order.
    events = {json.dumps(e["payload"]["body"], sort_keys=True): e for e in door.events(service)}
    assert len(events) == 3
    first, with_id = events['"first"'], events['"with an id"']
    structured = events['{"n": 3, "structured": true}']
    assert (first["topic"], first["source"]) == (service, "node-host")
    assert first["payload"]["body"] == "first"
    assert first["payload"]["attributes"] == {"user": "u1"}
    assert len(first["event_id"]) == 32
    assert with_id["event_id"] == f"uid-{service}"
    assert structured["payload"]["severity_text"] == "INFO"


@pytest.mark.parametrize(
    ("mode", "content_type"),
    [("winston-loki-proto", "application/x-protobuf"), ("winston-loki-json", "application/json")],
)
def test_winston_loki_pushes_are_stored_once(
    node: str, door: Door, mode: str, content_type: str
) -> None:
    before = door.counters()
    said = run_client(node, mode, door, mode)
    assert said == {"errors": [], "contentType": content_type}
    assert door.delta(before) == [4, 2, 2]
    first, second = door.events(mode)
    assert first["timestamp"] == second["timestamp"] == "2026-11-30T10:00:00.123000Z"
    assert first["source"] == "node-host"
    assert first["payload"]["labels"] == {"level": "info", "job": mode, "host": "node-host"}
    assert second["payload"]["labels"]["extra"] == "x"
    assert first["payload"]["line"].startswith("first")


def test_winston_loki_keeps_a_refused_push_and_sends_it_once_space_returns(
    node: str, tmp_path: Path
) -> None:
    """The disk is full: the push is answered 503; winston-loki keeps the batch, and sends it
    again when it is closed after space returned. Each entry is stored once."""
    with shipper_server(tmp_path, "--probe-seconds", "0.05") as door:
        give_back = fill_disk(door, tmp_path)
        with subprocess.Popen(
            [node, str(NODE_DIR / "clients.cjs"), "winston-loki-retry", door.url, "retried"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as client:
            assert client.stdout is not None and client.stdin is not None
            try:
                assert client.stdout.readline().strip() == "refused"
                refused = door.metric(
                    "aggregator_publish_rejected_total", reason="unavailable", protocol="loki"
                )
                assert refused >= 1
                assert door.events("retried") == []  # a refused push stores nothing
                give_back()
                wait_for(lambda: door.http.get("/health").status_code == 200, "space to return")
                client.stdin.write("go\n")
                client.stdin.flush()
                said = json.loads(client.stdout.readline())
                assert client.wait(timeout=60) == 0
            finally:
                client.kill()
        assert said["refusals"] >= 1
        events = door.events("retried")
        assert sorted(e["payload"]["line"].split()[1] for e in events) == sorted(
            str(i) for i in range(20)
        )
        assert (
            door.metric("aggregator_publish_events_total", protocol="loki", result="duplicate") == 0
        )
        door.assert_healthy()
