"""A server that must stop, stops: with the right exit code, one line saying why, and promptly.

Real server processes whose store or worker is given a fault by the test's own launcher (it
patches the aggregator before it runs ``main()``, as ``tests/test_isolation.py`` does): a store
whose connection breaks, a store call that never returns (a dead disk or network), a worker
that dies. Found by attacking issue 18's fault isolation: each of these used to leave the
process running for ever, or exit 0 after a broken store.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.support import ServerProcess, event, running_server

LAUNCHER = """
import sys, threading
from aggregator.front import publish
from aggregator.store import sqlite, StoreBroken
from aggregator.__main__ import main

commit = sqlite.SQLiteStore.commit
never = threading.Event()

def faulty(self, batches):
    ids = {record.event_id for batch in batches for record in batch}
    if "hang" in ids:
        never.wait()  # a store call that never returns
    if "break-the-store" in ids:
        raise StoreBroken("rollback after disk I/O error failed: disk I/O error")
    return commit(self, batches)

class Crash(BaseException):
    '''Caught by no handler: the worker that meets it dies, and the server with it.'''

decode = publish.decode_publish

def crashing(body, headers, limits):
    if b"crash-the-worker" in body:
        raise Crash("a fault no handler catches")
    return decode(body, headers, limits)

sqlite.SQLiteStore.commit = faulty
publish.decode_publish = crashing
main(sys.argv[1:])
"""


def faulty_server(tmp_path: Path, *args: str) -> AbstractContextManager[ServerProcess]:
    return running_server(tmp_path, *args, launcher=LAUNCHER)


def publish_in_background(url: str, event_id: str) -> threading.Thread:
    """A publish whose answer the test does not wait for (its commit never returns)."""

    def post() -> None:
        # The process is stopped under it: no answer, as for kill -9.
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{url}/publish", json=event(event_id=event_id), timeout=60)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def wait_for_stall(url: str, deadline: float = 30) -> str:
    """Poll /health until it says the writer's store call has stalled; its reason."""
    with httpx.Client(base_url=url, timeout=5) as http:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            response = http.get("/health")
            if response.status_code == 503 and "has not answered the writer" in response.text:
                return response.text
    raise AssertionError("/health never said that the store stopped answering")


def wait_for_line(server: ServerProcess, text: str, deadline: float = 30) -> None:
    """Poll the server's log (a subprocess, a deadline) until a line holds ``text``."""
    end = time.monotonic() + deadline
    while not any(text in line for line in server.lines):
        assert time.monotonic() < end, f"no line with {text!r}:\n{server.log()}"
        time.sleep(0.01)  # sleep-ok: polls a real subprocess's log with a deadline


def wait_exit(server: ServerProcess, seconds: float = 30) -> int:
    try:
        return server.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {seconds} s later:\n{server.log()}") from None


def held_request(url: str) -> socket.socket:
    """A request the server has taken in (it asked for the body: ``100 Continue``) and whose
    body never comes: it holds a graceful stop for the whole grace period."""
    host, port = url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)), timeout=30)
    client.sendall(
        b"GET /stats HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
    )
    assert client.recv(100).startswith(b"HTTP/1.1 100 ")
    return client


def test_sigterm_while_a_broken_store_stops_the_server_still_exits_1(tmp_path: Path) -> None:
    """The writer had set the shutdown itself, so the first SIGTERM was taken for a second one:
    "stopping now", the StoreBroken lost in the cancellation, exit 0 (no restart by
    ``Restart=on-failure``)."""
    with faulty_server(tmp_path, "--shutdown-grace-seconds", "60") as server:
        client = held_request(server.url)
        response = httpx.post(f"{server.url}/publish", json=event(event_id="break-the-store"))
        assert response.status_code == 503
        server.proc.send_signal(signal.SIGTERM)  # the stop is under way: the request holds it
        client.close()
        code = wait_exit(server)
    assert code == 1, server.log()
    assert "second SIGTERM" not in server.log()
    assert server.lines[-1].startswith("aggregator: fatal: the store's connection is in an")


def test_a_store_call_that_never_returns_is_unhealthy_and_sigterm_ends_it(
    tmp_path: Path,
) -> None:
    """/health said 200 while every publish waited for a commit that never came, and SIGTERM (a
    second one too) never ended the process: the commit's thread cannot be cancelled."""
    args = ("--stall-seconds", "0.2", "--shutdown-grace-seconds", "0.5")
    with faulty_server(tmp_path, *args) as server:
        publish_in_background(server.url, "hang")
        assert "AGGREGATOR_STALL_SECONDS" in wait_for_stall(server.url)
        server.proc.send_signal(signal.SIGTERM)
        code = wait_exit(server)
    assert code == 1, server.log()
    last = server.lines[-1]
    assert last.startswith("aggregator: fatal: not stopped") and "after SIGTERM" in last, last


def test_a_second_sigterm_ends_a_server_whose_store_never_answers(tmp_path: Path) -> None:
    args = ("--stall-seconds", "0.2", "--shutdown-grace-seconds", "600")
    with faulty_server(tmp_path, *args) as server:
        publish_in_background(server.url, "hang")
        wait_for_stall(server.url)
        server.proc.send_signal(signal.SIGTERM)
        wait_for_line(server, "SIGTERM: finishing")  # trio merges a signal still pending
        server.proc.send_signal(signal.SIGTERM)
        code = wait_exit(server)  # far less than the 600 s of grace
    assert code == 1, server.log()
    assert "after a second SIGTERM" in server.lines[-1], server.log()


def test_a_crash_says_why_in_one_last_line(tmp_path: Path) -> None:
    with faulty_server(tmp_path) as server:
        with pytest.raises(httpx.HTTPError):  # the server is gone before it answers
            httpx.post(f"{server.url}/publish", json=event(event_id="crash-the-worker"))
        code = wait_exit(server)
    assert code == 1
    assert "Traceback" in server.log()  # a bug keeps its traceback
    assert server.lines[-1] == (
        "aggregator: fatal: an unexpected error stopped the server: "
        "Crash: a fault no handler catches (traceback above)\n"
    )


def test_a_crash_whose_unwinding_never_ends_still_exits(tmp_path: Path) -> None:
    """A task that crashed cancels the others; one waiting for a store call that never returns
    cannot be cancelled, and the process (no longer listening) stayed alive for ever, where no
    supervisor would restart it."""
    args = ("--stall-seconds", "0.2", "--shutdown-grace-seconds", "0.5")
    with faulty_server(tmp_path, *args) as server:
        publish_in_background(server.url, "hang")
        wait_for_stall(server.url)
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{server.url}/publish", json=event(event_id="crash-the-worker"))
        code = wait_exit(server)
    assert code == 1, server.log()
    last = server.lines[-1]
    assert last.startswith("aggregator: fatal: not stopped") and "on its own" in last, last
