"""The Elasticsearch door seen from outside: a real server process, optionally one that answers
some bulk requests with 429 or 503 (a fault plan), and helpers to read it back."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import ServerProcess

COUNTED = ("received", "unique_processed", "duplicate_dropped")

# The fault plan, one step per bulk request in arrival order, from AGGREGATOR_TEST_BULK_FAULTS:
# "429" (the queue is full), "503" (the store cannot take writes: nothing stored), "stored-503"
# (the events ARE committed, then the answer is a 503, as when a COMMIT's outcome is unknown),
# "ok". Patched into the server by its launcher, as tests/test_isolation.py breaks a store.
FAULTY_LAUNCHER = """
import os, sys
from aggregator.__main__ import main
from aggregator.decoders.elastic import decode_bulk
from aggregator.front.app import Front
from aggregator.messages import Rejection, Unavailable
from aggregator.store import StoreUnavailable, sqlite

plan = [s for s in os.environ.get("AGGREGATOR_TEST_BULK_FAULTS", "").split(",") if s]
fail_after_commit = []
submit = Front.submit

async def faulty(self, body, headers, decode):
    bulk = getattr(decode, "func", None) is decode_bulk  # the bulk door's requests only
    if bulk and plan:
        step = plan.pop(0)
        print("FAULT-PLAN", step, flush=True, file=sys.stderr)
        if step == "429":
            return Rejection(429, "overloaded", "the test's fault plan says 429", retry_after=1)
        if step == "503":
            return Unavailable("the test's fault plan says 503")
        if step == "stored-503":
            fail_after_commit.append(step)
    return await submit(self, body, headers, decode)

commit = sqlite.SQLiteStore.commit

def committing_then_failing(self, batches):
    result = commit(self, batches)
    if fail_after_commit:
        fail_after_commit.pop()
        events = sum(len(batch) for batch in batches)
        print(f"FAULT-PLAN committed {events} events", flush=True, file=sys.stderr)
        raise StoreUnavailable("the test's fault plan: committed, then failed", maybe_stored=True)
    return result

Front.submit = faulty
sqlite.SQLiteStore.commit = committing_then_failing
main(sys.argv[1:])
"""


@dataclass
class Door:
    server: ServerProcess
    http: httpx.Client
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1])

    def faults_met(self) -> list[str]:
        """The fault plan's steps met so far, and how many events a ``stored-503`` committed."""
        return [
            line.split("FAULT-PLAN ", 1)[1]
            for line in self.server.log().splitlines()
            if line.startswith("FAULT-PLAN ")
        ]

    def counters(self) -> tuple[int, ...]:
        stats = self.http.get("/stats").json()
        return tuple(stats[key] for key in COUNTED)

    def events(self, topic: str) -> list[dict[str, Any]]:
        response = self.http.get("/events", params={"topic": topic, "limit": 1000})
        assert response.status_code == 200
        events: list[dict[str, Any]] = response.json()
        return events

    def metric(self, line_start: str) -> float:
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
        return 0.0

    def assert_healthy(self) -> None:
        assert self.http.get("/health").json() == {"status": "ok"}
        received, unique, duplicates = self.counters()
        assert received == unique + duplicates
        assert "Traceback" not in self.server.log(), self.server.log()[-3000:]


@contextmanager
def elastic_server(
    data: Path, *args: str, token: str = "", faults: list[str] | None = None
) -> Iterator[Door]:
    """A server process; with ``faults``, one whose bulk requests follow that plan."""
    env = {"AGGREGATOR_PUBLISH_TOKEN": token} if token else {}
    command = None
    if faults is not None:
        env["AGGREGATOR_TEST_BULK_FAULTS"] = ",".join(faults)
        command = [sys.executable, "-c", FAULTY_LAUNCHER]
    server = ServerProcess(
        ["--port", "0", "--data-dir", str(data), *args], env=env, command=command
    )
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield Door(server, http, token)
    finally:
        server.kill()


def results(output: str) -> Any:
    """The last line a client script printed, as JSON."""
    return json.loads(output.strip().splitlines()[-1])
