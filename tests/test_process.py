"""Real server processes: SIGTERM drain, restart, kill -9 under load, bad settings."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.support import ROOT, ServerProcess, event

SERVER_ARGS = ["--port", "0", "--workers", "8"]

# These inspect the SQLite file; tests/test_postgres.py has the PostgreSQL processes.
pytestmark = pytest.mark.sqlite_only


def start(data: Path, *args: str) -> ServerProcess:
    server = ServerProcess([*SERVER_ARGS, "--data-dir", str(data), *args])
    server.wait_ready()
    return server


def rows(data: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(data / "aggregator.sqlite3")
    try:
        return conn.execute("SELECT topic, event_id FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


async def load(
    url: str, acked: set[tuple[str, str]], enough: trio.Event, *, clients: int, threshold: int
) -> int:
    """Publish until the server goes away; record every event of every 200. Returns requests."""
    requests = 0

    async def client(n: int) -> None:
        nonlocal requests
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            previous: list[dict[str, str]] = []
            for i in range(100_000):
                batch = [event(f"t{n % 3}", f"{n}-{i}-{j}") for j in range(20)]
                batch += previous[:2]  # at-least-once: re-send part of the last batch
                try:
                    response = await http.post("/publish", json=batch)
                except httpx.TransportError:
                    return  # the server is gone
                requests += 1
                if response.status_code != 200:
                    assert response.status_code == 503, response.text  # shutting down
                    return
                acked.update((e["topic"], e["event_id"]) for e in batch)
                previous = batch
                if len(acked) >= threshold:
                    enough.set()

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(client, n)
    return requests


def check_store(data: Path, acked: set[tuple[str, str]]) -> None:
    """Every acknowledged event stored exactly once; counters exact and consistent."""
    server = start(data)
    try:
        stats = httpx.get(server.url + "/stats").json()
    finally:
        assert server.terminate() == 0
    stored = rows(data)
    assert len(stored) == len(set(stored)), "an event is stored twice"
    assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged events lost"
    assert stats["received"] == stats["unique_processed"] + stats["duplicate_dropped"]
    assert stats["unique_processed"] == len(stored)


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
    acked: set[tuple[str, str]] = set()
    enough = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: load(server.url, acked, enough, clients=8, threshold=2000))
            await enough.wait()
            server.proc.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
        await trio.to_thread.run_sync(server.kill)
    assert server.proc.returncode == -signal.SIGKILL
    assert len(acked) >= 2000
    await trio.to_thread.run_sync(check_store, tmp_path, acked)


@pytest.mark.trio
async def test_sigterm_under_load_drains_and_exits_0(tmp_path: Path) -> None:
    server = start(tmp_path)
    acked: set[tuple[str, str]] = set()
    enough = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: load(server.url, acked, enough, clients=8, threshold=2000))
            await enough.wait()
            server.proc.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(server.proc.wait)
    assert code == 0
    assert "SIGTERM" in server.log()
    await trio.to_thread.run_sync(check_store, tmp_path, acked)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "http"], {}, "--port='http' is not an integer"),
        ([], {"AGGREGATOR_WORKERS": "0"}, "AGGREGATOR_WORKERS='0' must be at least 1"),
        ([], {"AGGREGATOR_SYNCHRONOUS": "off"}, "must be one of: full, normal"),
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
