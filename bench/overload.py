"""Benchmark of the subscriber side and of overload: ``python -m bench.overload``.

Starts a real ``python -m aggregator`` on a temporary store and runs three phases:

1. capacity: closed-loop publishers, flat out, for ``--capacity-seconds``: the committed rate R;
2. overload: an open-loop offer of ``--factor`` × R events/s for ``--seconds`` (the README's 60 s),
   refused batches resent after ``Retry-After``; the server's RSS is sampled throughout; at the end
   every acknowledged event must be stored and a fresh publish must be answered at once;
3. subscribers: publish latency (closed loop) with 0 and then ``--subscribers`` live SSE streams
   attached, each of which must receive every event.

Numbers go to stdout as a small table; nothing is written anywhere else.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import trio

from simulator.rawhttp import RawClient
from tests.support import ServerProcess

BATCH = 100
JSON = {"Content-Type": "application/json"}
_ENCODE = msgspec.json.Encoder().encode


@dataclass
class Tally:
    acked: int = 0  # events in batches answered 200
    refused: int = 0  # 429 answers
    other: int = 0
    latencies: list[float] = field(default_factory=list)
    next_id: int = 0

    def batch(self) -> bytes:
        start, self.next_id = self.next_id, self.next_id + BATCH
        return _ENCODE(
            [
                {
                    "topic": f"bench{i % 8}",
                    "event_id": f"{i:012d}",
                    "timestamp": "2026-11-21T10:00:00Z",
                    "source": "bench",
                    "payload": {"n": i, "text": "x" * 100},
                }
                for i in range(start, start + BATCH)
            ]
        )


class Publishers:
    """Keep-alive connections of the simulator's lean client, lent one per request: httpx costs
    ~1 ms of CPU per request on trio and could not offer more than the server takes."""

    def __init__(self, url: str, connections: int) -> None:
        self._idle, self._lend = trio.open_memory_channel[RawClient](connections)
        self._all = [RawClient(url, timeout=60) for _ in range(connections)]
        for client in self._all:
            self._idle.send_nowait(client)

    async def post(self, body: bytes) -> httpx.Response:
        client = await self._lend.receive()
        try:
            return await client.post("/publish", content=body, headers=JSON)
        except BaseException:
            # Cancelled or failed mid-request: its answer may still arrive; never reuse that.
            with trio.CancelScope(shield=True):
                await client.aclose()
            raise
        finally:
            self._idle.send_nowait(client)

    async def aclose(self) -> None:
        for client in self._all:
            await client.aclose()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def send(client: Publishers, tally: Tally, batch: bytes) -> None:
    """Publish until accepted, honouring Retry-After, as an at-least-once client does."""
    while True:
        began = time.perf_counter()
        try:
            response = await client.post(batch)
        except httpx.TransportError:  # e.g. an idle keep-alive closed by the server: resend
            tally.other += 1
            continue
        if response.status_code == 200:
            tally.latencies.append(time.perf_counter() - began)
            tally.acked += BATCH
            return
        if response.status_code == 429:
            tally.refused += 1
        else:
            tally.other += 1
        await trio.sleep(float(response.headers.get("Retry-After", "1")))


async def closed_loop(client: Publishers, tally: Tally, seconds: float, n: int) -> None:
    deadline = trio.current_time() + seconds

    async def publisher() -> None:
        while trio.current_time() < deadline:
            await send(client, tally, tally.batch())

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(publisher)


async def open_loop(
    client: Publishers, tally: Tally, rate: float, seconds: float, pid: int
) -> list[int]:
    """Offer ``rate`` events/s whatever the answers; RSS samples (KiB) every half second."""
    samples: list[int] = []
    async with trio.open_nursery() as nursery:

        async def sample() -> None:
            while True:
                samples.append(rss_kib(pid))
                await trio.sleep(0.5)

        nursery.start_soon(sample)
        interval = BATCH / rate
        start = trio.current_time()
        sent = 0
        while trio.current_time() - start < seconds:
            nursery.start_soon(send, client, tally, tally.batch())
            sent += 1
            await trio.sleep_until(start + sent * interval)
        nursery.cancel_scope.cancel()  # in-flight batches were not counted as acknowledged
    return samples


async def subscriber(
    url: str, after: int, counts: list[int], index: int, ready: trio.Event
) -> None:
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"GET /subscribe?after={after} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        )
        tail = b""
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            chunk = tail + data
            counts[index] += chunk.count(b"\nid: ") + chunk.startswith(b"id: ")
            tail = chunk[-5:]
            ready.set()


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as data:
        server = ServerProcess(["--port", "0", "--data-dir", data])
        url = server.wait_ready()
        pid = server.proc.pid
        publishers = Publishers(url, args.connections)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                await run_phases(args, publishers, client, url, pid)
        finally:
            await publishers.aclose()
            server.terminate()


async def run_phases(
    args: argparse.Namespace,
    publishers: Publishers,
    client: httpx.AsyncClient,
    url: str,
    pid: int,
) -> None:
    rows: list[tuple[str, str]] = []
    idle_rss = rss_kib(pid)
    rows.append(("server RSS idle", f"{idle_rss / 1024:.0f} MiB"))

    capacity = Tally()
    began = time.perf_counter()
    await closed_loop(publishers, capacity, args.capacity_seconds, 64)
    rate = capacity.acked / (time.perf_counter() - began)
    rows.append(("capacity (closed loop, 64 publishers)", f"{rate:,.0f} events/s"))

    overload = Tally(next_id=capacity.next_id)
    offered = args.factor * rate
    began = time.perf_counter()
    samples = await open_loop(publishers, overload, offered, args.seconds, pid)
    elapsed = time.perf_counter() - began
    probe = time.perf_counter()
    response = await publishers.post(Tally(next_id=overload.next_id).batch())
    recovery = time.perf_counter() - probe
    stats = (await client.get("/stats")).json()
    rows += [
        (f"offered for {args.seconds:.0f} s", f"{offered:,.0f} events/s ({args.factor}x)"),
        ("acknowledged under overload", f"{overload.acked / elapsed:,.0f} events/s"),
        ("429 answers", f"{overload.refused:,}"),
        ("server RSS under overload (max)", f"{max(samples) / 1024:.0f} MiB"),
        ("server RSS under overload (median)", f"{statistics.median(samples) / 1024:.0f} MiB"),
        ("publish right after the overload", f"{response.status_code} in {recovery * 1000:.0f} ms"),
        (
            "stored >= acknowledged",
            str(stats["unique_processed"] >= capacity.acked + overload.acked),
        ),
    ]

    for n in (0, args.subscribers):
        counts = [0] * n
        tally = Tally(next_id=10**11 + n * 10**9)
        head = max((t["last_seq"] for t in (await client.get("/topics")).json()), default=0)
        before = (await client.get("/stats")).json()["unique_processed"]
        async with trio.open_nursery() as nursery:
            for i in range(n):
                ready = trio.Event()
                nursery.start_soon(subscriber, url, head, counts, i, ready)
                await ready.wait()
            await closed_loop(publishers, tally, args.subscriber_seconds, 8)
            total = (await client.get("/stats")).json()["unique_processed"]
            published = time.perf_counter()
            with trio.move_on_after(180):
                while n and min(counts) < total - before:  # noqa: ASYNC110 (a benchmark polls)
                    await trio.sleep(0.1)
            caught_up = time.perf_counter() - published
            nursery.cancel_scope.cancel()
        p50 = percentile(tally.latencies, 50) * 1000
        p99 = percentile(tally.latencies, 99) * 1000
        rows.append(
            (
                f"publish latency, {n} subscribers (8 publishers x {BATCH} events)",
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                f"{tally.acked / args.subscriber_seconds:,.0f} events/s",
            )
        )
        if n:
            complete = sum(c == total - before for c in counts)
            rows.append(
                (
                    "subscribers that received every event",
                    f"{complete}/{n} ({total - before:,} new; "
                    f"{sum(counts) / (n * (total - before)):.0%} of them delivered "
                    f"{caught_up:.1f} s after the last publish)",
                )
            )

    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    parser.add_argument(
        "--seconds",
        metavar="SECONDS",
        type=float,
        default=60,
        help="seconds of the overload phase (default %(default)s)",
    )
    parser.add_argument(
        "--factor",
        metavar="X",
        type=float,
        default=2.0,
        help="load offered, as a multiple of the capacity measured (default %(default)s)",
    )
    parser.add_argument(
        "--capacity-seconds",
        metavar="SECONDS",
        type=float,
        default=10,
        help="seconds of the capacity phase" + " (default %(default)s)",
    )
    parser.add_argument(
        "--subscribers",
        metavar="N",
        type=int,
        default=100,
        help="live /subscribe streams in the last phase" + " (default %(default)s)",
    )
    parser.add_argument(
        "--subscriber-seconds",
        metavar="SECONDS",
        type=float,
        default=15,
        help="seconds of each subscriber phase" + " (default %(default)s)",
    )
    parser.add_argument(
        "--connections",
        metavar="N",
        type=int,
        default=512,
        help="client connection cap (default %(default)s)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse(sys.argv[1:]))
