"""Events/s through the syslog TCP door beside ``POST /publish``: ``python -m bench.syslog``
(``make bench-syslog``).

Each round starts a fresh server (a subprocess, ``synchronous=FULL``) per row and drives it for
``--duration`` seconds with events of 8 topics, unique ids, all bodies encoded before the clock
starts:

- ``/publish``: ``--clients`` closed-loop connections (the simulator's lean HTTP client), 100
  events per request; counted when acknowledged;
- syslog TCP: ``--clients`` connections, and one connection (a relay), each writing RFC 5424
  messages 100 to a write, octet-counted as rsyslog frames them. Syslog has no acknowledgement:
  when the time is up each connection half-closes and waits for the server's close, which comes
  once everything it read is committed; the clock stops at the last close and every message
  sent counts.

Ratios are computed within a round (this machine's speed drifts); the table shows medians.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import msgspec
import trio

from bench.http import drive_http, load_parser
from simulator.procs import running

ROOT = Path(__file__).resolve().parent.parent
BATCH = 100
TOPICS = 8
SYSLOG_PORT = re.compile(r"syslog listening on tcp://\S+:(\d+)")
_ENCODE = msgspec.json.Encoder().encode


def publish_bodies(count: int) -> list[bytes]:
    return [
        _ENCODE([
            {"topic": f"topic-{(n + i) % TOPICS}", "event_id": str(uuid.uuid4()),
             "timestamp": "2026-11-21T10:00:00Z", "source": "bench",
             "payload": {"message": f"payment {n}-{i} ok", "n": n}}
            for i in range(BATCH)
        ])
        for n in range(count)
    ]  # fmt: skip


def syslog_writes(count: int) -> list[bytes]:
    """``count`` writes of BATCH octet-counted messages; a uuid makes each message unique."""
    out = []
    for n in range(count):
        lines = []
        for i in range(BATCH):
            message = (
                f"<134>1 2026-11-21T10:00:00.{i:06d}Z bench topic-{(n + i) % TOPICS} - - - "
                f"payment {n}-{i} ok {uuid.uuid4()}\n"
            ).encode()
            lines.append(b"%d %s" % (len(message), message))
        out.append(b"".join(lines))
    return out


async def drive_publish(url: str, pool: list[bytes], clients: int, seconds: float) -> float:
    """Acknowledged events per second over ``seconds``."""
    return await drive_http(
        url, "/publish", pool, per_body=BATCH, clients=clients, seconds=seconds,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip


async def drive_syslog(
    port: int, pool: list[bytes], connections: int, seconds: float
) -> tuple[float, int]:
    """Committed events per second (messages sent in ``seconds``, over the time until the
    server closed the last connection: it closes once all it read is committed), and the
    messages sent."""
    sent = 0
    queue = iter(pool)
    deadline = trio.current_time() + seconds

    async def connection() -> None:
        nonlocal sent
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            for write in queue:
                if trio.current_time() >= deadline:
                    break
                await stream.send_all(write)
                sent += BATCH
            await stream.send_eof()
            while await stream.receive_some(4096):
                pass

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(connection)
    return sent / (time.perf_counter() - started), sent


def run(row: str, clients: int, seconds: float, work: Path) -> tuple[float, int]:
    """events/s of one row on a fresh server, and the events it stored (checked in /stats)."""
    count = int(seconds * 1500)  # more than a run can send at ~100k events/s
    args = ["--port", "0", "--data-dir", str(work / row), "--synchronous", "full"]
    if row == "publish":
        pool = publish_bodies(count)
        with running("aggregator", args, ROOT) as child:
            rate = trio.run(drive_publish, child.url, pool, clients, seconds)
            stored = httpx.get(child.url + "/stats").json()["unique_processed"]
        return rate, stored
    pool = syslog_writes(count)
    with running("aggregator", [*args, "--syslog-tcp-port", "0"], ROOT) as child:
        match = SYSLOG_PORT.search("".join(child.lines))
        assert match, "the server did not log its syslog port"
        connections = 1 if row == "syslog-1" else clients
        rate, sent = trio.run(drive_syslog, int(match.group(1)), pool, connections, seconds)
        stored = httpx.get(child.url + "/stats").json()["unique_processed"]
    if stored != sent:
        raise RuntimeError(f"{row}: {sent} messages sent and closed cleanly, {stored} stored")
    return rate, stored


ROWS = {
    "publish": "POST /publish, batch 100, {c} connections",
    "syslog": "syslog TCP, 100 messages a write, {c} connections",
    "syslog-1": "syslog TCP, 100 messages a write, 1 connection",
}


def main() -> None:
    parser = load_parser(
        __doc__.split("\n\n")[0], "publishers, and connections of the many-connection row"
    )
    args = parser.parse_args()
    rates: dict[str, list[float]] = {row: [] for row in ROWS}
    ratios: dict[str, list[float]] = {row: [] for row in ROWS if row != "publish"}
    for n in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            for row in ROWS:
                rate, stored = run(row, args.clients, args.duration, Path(tmp) / str(n))
                rates[row].append(rate)
                print(f"round {n + 1}: {row} {rate:,.0f} events/s ({stored:,} stored)", flush=True)
        for row in ratios:
            ratios[row].append(rates[row][-1] / rates["publish"][-1])
    print(f"\n| door | events/s (median of {args.rounds}) | ÷ /publish (median; rounds) |")
    print("| --- | ---: | --- |")
    for row, label in ROWS.items():
        shown = "–"
        if row in ratios:
            each = ", ".join(f"{r:.0%}" for r in ratios[row])
            shown = f"{statistics.median(ratios[row]):.0%} ({each})"
        name = label.format(c=args.clients)
        print(f"| {name} | {statistics.median(rates[row]):,.0f} | {shown} |")


if __name__ == "__main__":
    main()
