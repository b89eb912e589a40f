"""The syslog TCP listener's bounds, against real server processes: with few file descriptors
(``prlimit --nofile``) idle peers must never take the descriptors the rest of the server needs,
and accept(2) failing with EMFILE must not end the listener (it ended the whole server); peers
that stall (mid-frame, after a length prefix, idle, still in the accept queue) must not hold up
SIGTERM."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import ServerProcess, wait_for
from tests.syslog import Door, ports, syslog_server


@contextmanager
def limited_server(data: Path, nofile: str, *args: str) -> Iterator[Door]:
    """A server process started under ``prlimit --nofile=SOFT:HARD``."""
    command = ["prlimit", f"--nofile={nofile}", sys.executable, "-m", "aggregator"]
    flags = ["--port", "0", "--data-dir", str(data), "--syslog-tcp-port", "0", *args]
    server = ServerProcess(flags, command=command)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield Door(server, http, ports(server)["tcp"], 0)
    finally:
        server.kill()


def open_files_limit(pid: int) -> int:
    for row in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if row.startswith("Max open files"):
            return int(row.split()[3])
    raise AssertionError("no open-files limit")


def line(app: str) -> bytes:
    return f"<13>1 - host {app} - - - fine\n".encode()


def test_idle_connections_cannot_take_the_descriptors_the_server_needs(tmp_path: Path) -> None:
    """64 descriptors, 256 connections allowed: the listener serves 16 (a quarter: 128 cannot
    be kept for the store and HTTP), the others wait in the kernel's queue; before the fix the
    37th accept failed with EMFILE and the server exited."""
    with limited_server(tmp_path, "64:64") as door, ExitStack() as stack:
        idle = [
            stack.enter_context(socket.create_connection(("127.0.0.1", door.tcp), timeout=30))
            for _ in range(100)
        ]
        wait_for(lambda: door.gauge("aggregator_syslog_connections") == 16, "16 served")
        assert "serving at most 16 connections, not 256" in door.server.log()
        assert door.http.get("/health").json() == {"status": "ok"}
        last = idle.pop()  # still in the kernel's queue: its line waits to be read
        last.sendall(line("queued-behind-idle"))
        for sock in idle:
            sock.close()
        door.wait_events("queued-behind-idle", 1)
        assert door.server.proc.poll() is None
        door.assert_healthy()


def test_the_soft_open_files_limit_is_raised_toward_the_hard_one(tmp_path: Path) -> None:
    with limited_server(tmp_path, "64:1000") as door:
        assert open_files_limit(door.server.proc.pid) == 256 + 128  # connections + reserve
        assert "serving at most" not in door.server.log()


def test_the_listener_survives_accept_failing_for_want_of_descriptors(tmp_path: Path) -> None:
    """Other connections (HTTP here) use up the descriptors: accept(2) fails with EMFILE; the
    listener waits and accepts the queued syslog peers once descriptors are free again."""
    with limited_server(tmp_path, "64:64") as door, ExitStack() as stack:
        http_port = int(door.server.url.rsplit(":", 1)[1])
        hogs = [
            stack.enter_context(socket.create_connection(("127.0.0.1", http_port), timeout=30))
            for _ in range(40)
        ]
        peers = [
            stack.enter_context(socket.create_connection(("127.0.0.1", door.tcp), timeout=30))
            for _ in range(16)
        ]
        wait_for(lambda: "syslog tcp: cannot accept a connection" in door.server.log(), "EMFILE")
        assert door.server.proc.poll() is None
        peers[-1].sendall(line("after-emfile"))
        for hog in hogs:
            hog.close()
        wait_for(lambda: "accepting connections again" in door.server.log(), "accept again")
        # The readers were short of descriptors too (SQLITE_CANTOPEN): wait for /health.
        wait_for(lambda: answers(door, "/events?topic=after-emfile") not in (None, []), "the line")
        assert door.server.proc.poll() is None


def answers(door: Door, path: str) -> object:
    """The JSON body of ``path``; None while the server is short of descriptors (no answer, or
    a 5xx from a reader that could not open the store)."""
    try:
        response = door.http.get(path, timeout=5)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def test_sigterm_is_not_held_up_by_stalled_peers(tmp_path: Path) -> None:
    """30 peers, 20 served: stalled inside a frame, after a bare length prefix, idle after a
    whole line; 10 still in the accept queue. SIGTERM: the whole lines are committed, and their
    peers get a FIN after that commit; the peers whose frame was cut, and the queued ones (nothing
    of theirs was read), a reset; the server exits 0 long before its 30 s grace."""
    flags = ("--shutdown-grace-seconds", "30", "--syslog-max-connections", "20")
    with syslog_server(tmp_path, *flags) as door, ExitStack() as stack:
        peers = []
        for n in range(30):
            peer = stack.enter_context(
                socket.create_connection(("127.0.0.1", door.tcp), timeout=30)
            )
            peer.sendall((b"200 <13>1 - h stall - - - part", b"12345", line(f"whole-{n}"))[n % 3])
            peers.append(peer)
        wait_for(lambda: door.gauge("aggregator_syslog_connections") == 20, "20 served")
        served = [n for n in range(20) if n % 3 == 2]
        wait_for(lambda: all(door.events(f"whole-{n}") for n in served), "the whole lines")
        door.server.proc.terminate()
        assert door.server.proc.wait(20) == 0  # not the grace: nothing waits for the peers
        for n, peer in enumerate(peers[:20]):
            if n % 3 == 2:
                assert peer.recv(10) == b""  # its line committed: a FIN
            else:
                with pytest.raises(ConnectionResetError):  # its frame cut: a reset
                    peer.recv(10)
        for peer in peers[20:]:
            with pytest.raises(ConnectionResetError):
                peer.recv(10)
