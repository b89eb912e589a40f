"""``python -m simulator.readprobe URL SECONDS``: read latencies beside a load, from a process of
its own (the load generator's busy event loop would add its own delays to the figures).

Every ``INTERVAL`` one request, ``/stats`` and ``/events`` in turn: ``/events`` asks for 100
events of a random stored topic after a random cursor below the events stored, so it reads old
pages as well as new ones. Prints ``{"events": [seconds…], "stats": [seconds…]}``.
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

INTERVAL = 0.025  # 20 reads a second of each kind


def probe(url: str, duration: float) -> dict[str, list[float]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    rng = random.Random(7)
    latencies: dict[str, list[float]] = {"events": [], "stats": []}
    stats: dict[str, Any] = {"topics": [], "unique_processed": 0}
    deadline = time.perf_counter() + duration
    turn = 0
    try:
        while time.perf_counter() < deadline:
            tick = time.perf_counter()
            if turn % 2 == 0 or not stats["topics"]:
                kind, path = "stats", "/stats"
            else:
                cursor = rng.randrange(int(stats["unique_processed"]) + 1)
                query = {"topic": rng.choice(stats["topics"]), "after": cursor, "limit": 100}
                kind, path = "events", f"/events?{urlencode(query)}"
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
            latencies[kind].append(time.perf_counter() - tick)
            if kind == "stats":
                stats = json.loads(body)
            turn += 1
            time.sleep(max(0.0, INTERVAL - (time.perf_counter() - tick)))  # sleep-ok: pacing
    finally:
        conn.close()
    return latencies


def main(argv: list[str] | None = None) -> None:
    url, seconds = sys.argv[1:3] if argv is None else argv[:2]
    sys.stdout.write(json.dumps(probe(url, float(seconds))))


if __name__ == "__main__":
    main()
