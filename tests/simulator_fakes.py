"""An in-process fake aggregator for the simulator's tests: dedups like the real one, counts in
/stats, and injects faults by request number (an ``httpx.MockTransport`` handler)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import trio

# A fault for a publish attempt: None (answer normally) or one of these.
FAULTS = ("503", "429", "500-after-commit", "timeout-after-commit", "connect-error")


class FakeAggregator:
    def __init__(self, faults: Callable[[int], str | None] = lambda n: None) -> None:
        self.keys: set[tuple[str, str]] = set()
        self.received = 0
        self.duplicates = 0
        self.attempts = 0
        self.miscount = 0  # added to unique_processed from the 2nd /stats on: wrong counts
        self.stats_reads = 0
        self._faults = faults

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _commit(self, body: bytes) -> tuple[int, int]:
        data = json.loads(body)
        events = data if isinstance(data, list) else [data]
        stored = 0
        for event in events:
            key = (event["topic"], event["event_id"])
            if key not in self.keys:
                self.keys.add(key)
                stored += 1
        self.received += len(events)
        self.duplicates += len(events) - stored
        return len(events), stored

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()  # let the other clients run, as real I/O would
        if request.url.path == "/stats":
            self.stats_reads += 1
            unique = len(self.keys) + (self.miscount if self.stats_reads > 1 else 0)
            body = {"received": self.received, "unique_processed": unique,
                    "duplicate_dropped": self.duplicates, "topics": [], "uptime": 1.0}  # fmt: skip
            return httpx.Response(200, json=body)
        self.attempts += 1
        fault = self._faults(self.attempts)
        if fault == "connect-error":
            raise httpx.ConnectError("refused", request=request)
        if fault in ("503", "429"):
            return httpx.Response(int(fault), headers={"Retry-After": "1"}, json={"error": "x"})
        accepted, stored = self._commit(request.content)
        if fault == "500-after-commit":
            return httpx.Response(500, json={"error": "internal"})
        if fault == "timeout-after-commit":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(
            200, json={"accepted": accepted, "stored": stored, "duplicates": accepted - stored}
        )
