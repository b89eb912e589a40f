"""A real server process with its syslog listeners on, seen from outside; and an rsyslogd relay.

``Door.send_tcp`` closes the way a careful sender does: it half-closes and waits for the
server's own close, which the server sends only once everything it read is committed (a FIN; a
reset when a frame was cut); so when it returns, the messages are in ``/events`` (or counted as
refused), with no polling.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import ServerProcess, running_server, wait_for

LISTENING = re.compile(r"syslog listening on (tcp|udp)://\S+:(\d+)")
METRIC = re.compile(r'^aggregator_syslog_messages_total\{result="(\w+)",transport="(\w+)"\} (\S+)$')
COUNTED = ("received", "unique_processed", "duplicate_dropped")
HOSTNAME = socket.gethostname().split(".")[0]  # what logger and rsyslog send as HOSTNAME


@dataclass
class Door:
    server: ServerProcess
    http: httpx.Client
    tcp: int
    udp: int

    def counters(self) -> tuple[int, ...]:
        stats = self.http.get("/stats").json()
        return tuple(stats[key] for key in COUNTED)

    def messages(self) -> dict[tuple[str, str], float]:
        """``aggregator_syslog_messages_total`` by (transport, result)."""
        found = {}
        for line in self.http.get("/metrics").text.splitlines():
            match = METRIC.match(line)
            if match:
                found[match.group(2), match.group(1)] = float(match.group(3))
        return found

    def gauge(self, name: str) -> float:
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    def events(self, topic: str) -> list[dict[str, Any]]:
        response = self.http.get("/events", params={"topic": topic, "limit": 1000})
        assert response.status_code == 200
        events: list[dict[str, Any]] = response.json()
        return events

    def wait_events(self, topic: str, count: int) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.events(topic)) >= count, f"{count} events of {topic}")
        return self.events(topic)

    def send_tcp(self, data: bytes) -> bool:
        """Send ``data`` on a new connection, half-close, and wait for the server's close: True
        for a FIN (every frame whole and committed), False for a reset (a frame was cut, and
        counted ``truncated``; the whole ones before it are committed too)."""
        with socket.create_connection(("127.0.0.1", self.tcp), timeout=30) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                return False
            return True

    def send_udp(self, data: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, ("127.0.0.1", self.udp))

    def assert_healthy(self) -> None:
        assert self.http.get("/health").json() == {"status": "ok"}
        received, unique, duplicates = self.counters()
        assert received == unique + duplicates
        assert "Traceback" not in self.server.log(), self.server.log()[-3000:]


def ports(server: ServerProcess) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in LISTENING.finditer(server.log())}


@contextmanager
def syslog_server(data: Path, *args: str) -> Iterator[Door]:
    """A server process with both syslog listeners on free ports."""
    flags = ("--syslog-tcp-port", "0", "--syslog-udp-port", "0", "--log-level", "debug")
    with (
        running_server(data, *flags, *args) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        found = ports(server)
        yield Door(server, http, found["tcp"], found["udp"])


def logger(door: Door, *args: str, udp: bool = False) -> None:
    """util-linux logger, sending one message to the door."""
    port = door.udp if udp else door.tcp
    transport = "-d" if udp else "-T"
    command = ["logger", "-n", "127.0.0.1", "-P", str(port), transport, *args]
    subprocess.run(command, check=True, timeout=30, capture_output=True)


@contextmanager
def rsyslog_relay(work: Path, actions: list[str]) -> Iterator[int]:
    """rsyslogd in the foreground: ``imtcp`` on a free port (yielded), every message through
    ``actions``; stopped with SIGTERM on the way out (it flushes its queues then)."""
    work.mkdir(parents=True, exist_ok=True)
    port_file = work / "port"
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}")\n'
        'module(load="imtcp")\n'
        f'input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{port_file}" '
        'ruleset="relay")\n'
        'ruleset(name="relay") {\n' + "".join(f"  {a}\n" for a in actions) + "}\n"
    )
    with (work / "rsyslogd.log").open("w") as log:
        proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), "rsyslogd's port")
        yield int(port_file.read_text())
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, (work / "rsyslogd.log").read_text()
