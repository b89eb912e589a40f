"""Events/s through the Elasticsearch bulk door beside ``POST /publish``: ``python -m
bench.elastic`` (``make bench-elastic``).

Each round starts a fresh server (a subprocess, ``synchronous=FULL``) per row and drives it for
``--duration`` seconds with ``--clients`` closed-loop connections (the simulator's lean HTTP
client), events of 8 topics, unique ids, all bodies encoded before the clock starts:

- ``/publish``: 100 events per request, a JSON array;
- ``/_bulk``: 100 documents per request, ``create`` actions with an ``_id`` (what a shipper
  that names its documents sends);
- ``/_bulk`` without ``_id``: 100 ``index`` actions whose ids are the content hash (rsyslog's and
  most shippers' default).

An event counts once its request is acknowledged, and every bulk item must say ``201``. Ratios
are computed within a round (this machine's speed drifts, and other work shares its two cores);
rows alternate their order from round to round; the table shows medians. Beside events/s, the
server's own CPU time per event (user + system, all its threads, from /proc) is a measure that
other load on the machine disturbs less.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import msgspec
import trio

from bench.http import drive_http, load_parser
from bench.syslog import BATCH, TOPICS, publish_bodies
from simulator.procs import running

ROOT = Path(__file__).resolve().parent.parent
_ENCODE = msgspec.json.Encoder().encode


def bulk_bodies(count: int, *, with_id: bool) -> list[bytes]:
    out = []
    for n in range(count):
        lines = []
        for i in range(BATCH):
            unique = str(uuid.uuid4())
            meta: dict[str, str] = {"_index": f"topic-{(n + i) % TOPICS}"}
            if with_id:
                meta["_id"] = unique
            action = {"create" if with_id else "index": meta}
            # /publish's payload, with the time and source inside it as a shipper sends them;
            # without an _id the uuid makes the document unique.
            document: dict[str, object] = {"@timestamp": "2026-11-21T10:00:00Z", "host": "bench",
                                           "message": f"payment {n}-{i} ok", "n": n}  # fmt: skip
            if not with_id:
                document["id"] = unique
            lines += [_ENCODE(action), _ENCODE(document)]
        out.append(b"\n".join(lines) + b"\n")
    return out


def _all_created(path: str, content: bytes) -> None:
    if path != "/publish" and b'"errors":false' not in content[:40]:
        raise RuntimeError(f"{path}: an item was not created: {content[:300]!r}")


async def drive(url: str, path: str, pool: list[bytes], clients: int, seconds: float) -> float:
    """Acknowledged events per second over ``seconds``."""
    media = "application/json" if path == "/publish" else "application/x-ndjson"
    return await drive_http(
        url, path, pool, per_body=BATCH, clients=clients, seconds=seconds,
        headers={"Content-Type": media}, check=_all_created,
    )  # fmt: skip


ROWS = {
    "publish": ("/publish", "POST /publish, batch 100, {c} connections"),
    "bulk": ("/_bulk", "POST /_bulk, 100 create with _id, {c} connections"),
    "bulk-hash": ("/_bulk", "POST /_bulk, 100 index without _id (content hash), {c} connections"),
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(row: str, clients: int, seconds: float, work: Path) -> tuple[float, int, float]:
    """events/s of one row on a fresh server, the events it stored (from /stats), and the
    server's CPU µs per acknowledged event."""
    count = int(seconds * 1500)  # more than a run can send at ~100k events/s
    args = ["--port", "0", "--data-dir", str(work / row), "--synchronous", "full"]
    pool = publish_bodies(count) if row == "publish" else bulk_bodies(count, with_id=row == "bulk")
    with running("aggregator", args, ROOT) as child:
        before = cpu_seconds(child.proc.pid)
        started = time.perf_counter()
        rate = trio.run(drive, child.url, ROWS[row][0], pool, clients, seconds)
        events = rate * (time.perf_counter() - started)
        cpu = cpu_seconds(child.proc.pid) - before
        stored = httpx.get(child.url + "/stats").json()["unique_processed"]
    return rate, stored, cpu / max(events, 1) * 1e6


def main() -> None:
    parser = load_parser(__doc__.split("\n\n")[0], "concurrent clients of each door")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {row: [] for row in ROWS}
    cpus: dict[str, list[float]] = {row: [] for row in ROWS}
    ratios: dict[str, list[float]] = {row: [] for row in ROWS if row != "publish"}
    for n in range(args.rounds):
        order = list(ROWS) if n % 2 == 0 else list(reversed(ROWS))
        with tempfile.TemporaryDirectory() as tmp:
            for row in order:
                rate, stored, cpu = run(row, args.clients, args.duration, Path(tmp) / str(n))
                rates[row].append(rate)
                cpus[row].append(cpu)
                print(
                    f"round {n + 1}: {row} {rate:,.0f} events/s ({stored:,} stored), "
                    f"server CPU {cpu:.1f} µs/event",
                    flush=True,
                )
        for row in ratios:
            ratios[row].append(rates[row][-1] / rates["publish"][-1])
    print(
        f"\n| door | events/s (median of {args.rounds}) | ÷ /publish (median; rounds) "
        "| server CPU µs/event (median) |"
    )
    print("| --- | ---: | --- | ---: |")
    for row, (_, label) in ROWS.items():
        shown = "–"
        if row in ratios:
            each = ", ".join(f"{r:.0%}" for r in ratios[row])
            shown = f"{statistics.median(ratios[row]):.0%} ({each})"
        name = label.format(c=args.clients)
        rate, cpu = statistics.median(rates[row]), statistics.median(cpus[row])
        print(f"| {name} | {rate:,.0f} | {shown} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
