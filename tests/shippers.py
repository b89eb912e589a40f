"""A real server process seen by the shipper doors' tests (OTLP, Loki): counters, events and
the per-door metrics, read over HTTP."""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServerProcess, event, running_server

COUNTED = ("received", "unique_processed", "duplicate_dropped")


@dataclass
class Door:
    server: ServerProcess
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url

    def counters(self) -> tuple[int, int, int]:
        stats = self.http.get("/stats").json()
        received, unique, duplicates = (stats[key] for key in COUNTED)
        return received, unique, duplicates

    def delta(self, before: tuple[int, int, int]) -> list[int]:
        return [a - b for a, b in zip(self.counters(), before, strict=True)]

    def events(self, topic: str) -> list[dict[str, Any]]:
        response = self.http.get("/events", params={"topic": topic, "limit": 1000})
        assert response.status_code == 200
        events: list[dict[str, Any]] = response.json()
        return events

    def metric(self, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(self.http.get("/metrics").text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def assert_healthy(self) -> None:
        assert self.http.get("/health").json() == {"status": "ok"}
        received, unique, duplicates = self.counters()
        assert received == unique + duplicates


@contextmanager
def shipper_server(data: Path, *args: str) -> Iterator[Door]:
    with (
        running_server(data, *args) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        yield Door(server, http)


def fill_disk(door: Door, data: Path) -> Callable[[], None]:
    """Fill the server's disk: its ``RLIMIT_FSIZE``, lowered from outside (as in
    ``test_faults.py``) to leave under 256 KiB, then used up by ``/publish`` until the store
    answers 503. The result gives the space back."""
    pid = door.server.proc.pid
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    sizes = [p.stat().st_size for p in data.iterdir() if p.name.startswith("aggregator")]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (max(sizes) + 256 * 1024, hard))
    filler = {"text": "x" * 2000}
    for i in range(400):
        batch = [event("filler", f"{i}-{j}", payload=filler) for j in range(50)]
        if door.http.post("/publish", json=batch).status_code == 503:
            break
    else:
        raise AssertionError("the file size limit was never reached")

    def give_back() -> None:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))

    return give_back
