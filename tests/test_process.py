"""Real server processes: SIGTERM drain, restart, kill -9 under load, bad settings."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support import ROOT, ServerProcess, event, wait_for

SERVER_ARGS = ["--port", "0", "--workers", "8"]

# These inspect the SQLite file; tests/test_postgres.py has the PostgreSQL processes.
pytestmark = pytest.mark.sqlite_only


def start(data: Path, *args: str) -> ServerProcess:
    server = ServerProcess([*SERVER_ARGS, "--data-dir", str(data), *args])
    server.wait_ready()
    return server


def rows(data: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(data / "aggregator.sqlite3")
    try:
        return conn.execute("SELECT topic, event_id, payload FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


FIRST, RESENT = {"copy": "first"}, {"copy": "resent"}


@dataclass
class Load:
    """What the publishers saw, request by request. Each request is on a connection of its own
    (``Connection: close``), so a request that got no answer was not lost by a keep-alive race:
    either the server never read it (then none of its new events may be stored) or the server
    dropped a request it had accepted (then they are: ``check_store`` tells them apart)."""

    acked: set[tuple[str, str]] = field(default_factory=set)
    accepted: int = 0  # sums over the 200 answers
    stored: int = 0
    refused: int = 0  # 503 "shutting down", or the listener already closed
    dropped: list[set[tuple[str, str]]] = field(default_factory=list)  # new events of each
    errors: list[str] = field(default_factory=list)  # what each dropped request's client saw


async def load(url: str, seen: Load, enough: trio.Event, *, clients: int, threshold: int) -> None:
    """Publish until the server goes away, and account for every request."""

    async def client(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            previous: list[dict[str, Any]] = []
            for i in range(100_000):
                new = [event(f"t{n % 3}", f"{n}-{i}-{j}", payload=FIRST) for j in range(20)]
                # At-least-once: re-send part of the last batch, with another payload (a copy
                # that arrives again must never replace the stored one).
                batch = new + [{**e, "payload": RESENT} for e in previous[:2]]
                try:
                    response = await http.post(
                        "/publish", json=batch, headers={"Connection": "close"}
                    )
                except httpx.ConnectError:
                    seen.refused += 1  # not listening any more: the request was never sent
                    return
                except httpx.TransportError as exc:
                    seen.dropped.append({(e["topic"], e["event_id"]) for e in new})
                    seen.errors.append(repr(exc))
                    return
                if response.status_code != 200:
                    assert response.status_code == 503, response.text
                    assert response.json()["error"] == "unavailable", response.text
                    seen.refused += 1
                    return
                seen.acked.update((e["topic"], e["event_id"]) for e in batch)
                seen.accepted += response.json()["accepted"]
                seen.stored += response.json()["stored"]
                previous = new
                if len(seen.acked) >= threshold:
                    enough.set()

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(client, n)


def check_store(data: Path, seen: Load, *, all_answered: bool) -> None:
    """Every acknowledged event stored, with its first copy; counters exact and consistent.

    ``all_answered``: the server promised an answer to every request it accepted (SIGTERM, not
    kill -9), so no request without an answer may have been committed, and the 200 answers add
    up to the counters exactly."""
    server = start(data)
    try:
        stats = httpx.get(server.url + "/stats").json()
    finally:
        assert server.terminate() == 0
    stored = rows(data)
    keys = {(topic, event_id) for topic, event_id, _ in stored}
    assert seen.acked <= keys, f"{len(seen.acked - keys)} acknowledged events lost"
    replaced = [key for *key, payload in stored if json.loads(payload) != FIRST]
    assert not replaced, f"{len(replaced)} stored events were replaced by a later copy"
    assert stats["received"] == stats["unique_processed"] + stats["duplicate_dropped"]
    assert stats["unique_processed"] == len(stored)
    assert seen.accepted <= stats["received"] and seen.stored <= stats["unique_processed"]
    if all_answered:
        answerless = [e for d, e in zip(seen.dropped, seen.errors, strict=True) if d & keys]
        assert not answerless, f"{len(answerless)} requests committed, never answered: {answerless}"
        assert (stats["received"], stats["unique_processed"]) == (seen.accepted, seen.stored)


def test_sigterm_then_restart_keeps_events_and_counters(tmp_path: Path) -> None:
    server = start(tmp_path)
    batch = [event("a", str(i)) for i in range(10)]
    first = httpx.post(server.url + "/publish", json=batch)
    assert first.json() == {"accepted": 10, "stored": 10, "duplicates": 0}
    assert server.terminate() == 0
    assert "stopped; the store is closed" in server.log()

    server = start(tmp_path)
    try:
        again = httpx.post(server.url + "/publish", json=batch[:3])
        stats = httpx.get(server.url + "/stats").json()
        events = httpx.get(server.url + "/events").json()
    finally:
        assert server.terminate() == 0
    assert again.json() == {"accepted": 3, "stored": 0, "duplicates": 3}
    assert (stats["received"], stats["unique_processed"], stats["duplicate_dropped"]) == (13, 10, 3)
    assert [e["event_id"] for e in events] == [str(i) for i in range(10)]


@pytest.mark.trio
async def test_kill_9_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    server = start(tmp_path)
    seen = Load()
    enough = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: load(server.url, seen, enough, clients=8, threshold=2000))
            await enough.wait()
            server.proc.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
        await trio.to_thread.run_sync(server.kill)
    assert server.proc.returncode == -signal.SIGKILL
    assert len(seen.acked) >= 2000
    await trio.to_thread.run_sync(partial(check_store, tmp_path, seen, all_answered=False))


@pytest.mark.trio
async def test_sigterm_under_load_drains_and_exits_0(tmp_path: Path) -> None:
    server = start(tmp_path)
    seen = Load()
    enough = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: load(server.url, seen, enough, clients=8, threshold=2000))
            await enough.wait()
            server.proc.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(server.proc.wait)
    assert code == 0
    assert "SIGTERM" in server.log()
    await trio.to_thread.run_sync(partial(check_store, tmp_path, seen, all_answered=True))


def metric(url: str, name: str) -> float:
    """One sample of the server's /metrics, by its exact name (labels included)."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


async def sigterm_with_publishes_held(
    data: Path, n: int, *args: str
) -> tuple[dict[int, int | str], int | None]:
    """``n`` publishes of 5 events are held inside a server (its one worker's request waits in
    the writer for a lock another connection holds, the rest in the queue) when SIGTERM
    arrives; only then is the lock released. Returns what each client got, and the exit code."""
    server = start(data, "--workers", "1", *args)
    blocker = sqlite3.connect(data / "aggregator.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    answers: dict[int, int | str] = {}

    async def publish(i: int) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            try:
                response = await http.post(
                    "/publish", json=[event("s", f"{i}-{j}") for j in range(5)]
                )
            except httpx.TransportError as exc:
                answers[i] = f"no answer: {exc!r}"
            else:
                answers[i] = response.status_code

    def in_flight() -> bool:
        # The one worker holds the request the writer waits with; the rest wait in the queue.
        return metric(server.url, "aggregator_ingest_queue_depth") == n - 1

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(publish, i)
            await trio.to_thread.run_sync(partial(wait_for, in_flight, "requests in flight"))
            server.proc.send_signal(signal.SIGTERM)
            await trio.to_thread.run_sync(
                partial(wait_for, lambda: "SIGTERM" in server.log(), "the SIGTERM to be taken")
            )
            blocker.execute("ROLLBACK")
        code = await trio.to_thread.run_sync(server.proc.wait)
    blocker.close()
    return answers, code


@pytest.mark.trio
async def test_sigterm_answers_every_publish_in_flight(tmp_path: Path) -> None:
    """Requests are held inside the server when SIGTERM arrives. Each must get its answer."""
    n = 6
    answers, code = await sigterm_with_publishes_held(tmp_path, n)
    assert answers == dict.fromkeys(range(n), 200)
    assert code == 0
    assert len(rows(tmp_path)) == n * 5


@pytest.mark.trio
async def test_after_the_grace_every_request_is_answered_before_the_connections_close(
    tmp_path: Path,
) -> None:
    """With no grace at all, SIGTERM ends the queue at once: the request the writer holds is
    committed and answered 200, the queued ones are answered 503 and not stored. Each answer
    must reach its client before the connections are closed (a 200 cut off is a request
    committed and never answered)."""
    n = 6
    answers, code = await sigterm_with_publishes_held(tmp_path, n, "--shutdown-grace-seconds", "0")
    assert sorted(answers.values(), key=str) == [200] + [503] * (n - 1), answers
    assert code == 0
    assert len(rows(tmp_path)) == 5


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "http"], {}, "--port='http' is not an integer"),
        ([], {"AGGREGATOR_WORKERS": "0"}, "AGGREGATOR_WORKERS='0' must be at least 1"),
        ([], {"AGGREGATOR_SYNCHRONOUS": "off"}, "must be one of: full, normal"),
        # An unknown flag: one line, not the whole usage first (issue 20).
        (["--bogus"], {}, "unrecognized arguments: --bogus (see aggregator --help)"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aggregator", "--data-dir", str(tmp_path), *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_foreign_database_stops_start_up_with_a_clear_error(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "aggregator.sqlite3")
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    result = subprocess.run(
        [sys.executable, "-m", "aggregator", "--port", "0", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "another program" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "kind", "scheme"),
    [
        ("--port", socket.SOCK_STREAM, ""),
        ("--syslog-tcp-port", socket.SOCK_STREAM, "tcp://"),
        ("--syslog-udp-port", socket.SOCK_DGRAM, "udp://"),
    ],
)
def test_a_taken_port_names_the_address_and_the_flag(
    tmp_path: Path, flag: str, kind: socket.SocketKind, scheme: str
) -> None:
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        port = taken.getsockname()[1]
        ports = {"--port": "0", flag: str(port)}  # the HTTP port free unless it is the one taken
        result = subprocess.run(
            [sys.executable, "-m", "aggregator", "--data-dir", str(tmp_path),
             *(word for pair in ports.items() for word in pair)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last == (
        f"aggregator: error: [Errno 98] cannot listen on {scheme}127.0.0.1:{port}: "
        f"Address already in use ({flag})"
    )


def test_a_second_server_on_the_same_store_is_refused_with_one_line(tmp_path: Path) -> None:
    first = start(tmp_path)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "aggregator", *SERVER_ARGS, "--data-dir", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        with httpx.Client(base_url=first.url) as http:
            still = http.post("/publish", json=event()).status_code
    finally:
        assert first.terminate() == 0
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert second.stderr.startswith("aggregator: error: ")
    assert "is in use by another aggregator" in second.stderr
    assert still == 200  # the first one never noticed
    # Once the first has stopped (or died: the kernel drops the lock), the store opens again.
    third = start(tmp_path)
    third.kill()
    fourth = start(tmp_path)
    assert fourth.terminate() == 0


# Runs the server, pausing it at its first import of trio (the heavy imports), where it says so
# and waits for a line on stdin: the test signals it there.
PAUSED_AT_IMPORTS = """
import runpy, sys
class Pause:
    def find_spec(self, name, path=None, target=None):
        if name == "trio":
            sys.meta_path.remove(self)
            sys.stderr.write("importing trio\\n")
            sys.stderr.flush()
            sys.stdin.readline()
        return None
sys.meta_path.insert(0, Pause())
sys.argv[1:1] = []
runpy.run_module("aggregator", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_stops_it_cleanly(tmp_path: Path, signum: int) -> None:
    """In a container the server is PID 1, and the kernel drops a signal PID 1 has no handler
    for: the handler must be there from the first moments, before the imports."""
    with subprocess.Popen(
        [sys.executable, "-c", PAUSED_AT_IMPORTS, *SERVER_ARGS, "--data-dir", str(tmp_path)],
        cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stderr is not None and proc.stderr.readline() == "importing trio\n"
        proc.send_signal(signum)
        try:
            code = proc.wait(30)
        finally:
            proc.kill()
        log = proc.stderr.read()
    assert code == 0, log
    assert "Traceback" not in log
