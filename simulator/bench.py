"""``python -m simulator.bench`` (``make bench``): the README's benchmark table, in one run.

Side by side, on this machine, all on 127.0.0.1, every run bounded by ``--duration``:
raw SQLite ``executemany`` (the store's ceiling), a bare ASGI app on hypercorn-trio (the HTTP
floor), the simulator against a null server (its own ceiling), and the real server (a subprocess,
synchronous FULL, a fresh store per run) with batch 1 and 100, uuid4 and uuid7 ids, 50 clients.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import ssl
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from simulator.__main__ import expectation
from simulator.client import RetryPolicy
from simulator.config import Options
from simulator.generator import Generator
from simulator.procs import Child, running
from simulator.rawhttp import RawClient
from simulator.rawsqlite import run_raw
from simulator.report import percentile
from simulator.runner import Load, Tally, run_load
from simulator.verify import fetch_stats, verify

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261121


@dataclass(frozen=True, slots=True)
class Row:
    target: str
    ids: str
    batch: int
    offered: float  # events/s sent
    committed: float | None  # unique events/s (Δunique_processed), where something stores
    requests: float  # req/s
    p50_ms: float | None
    p99_ms: float | None
    rss_mib: float | None
    note: str = ""


def _options(url: str, batch: int, ids: str, events: int, duration: float, clients: int) -> Options:
    return dataclasses.replace(
        Options(),
        url=url,
        batch=batch,
        id_style=ids,
        events=events,
        duration=duration,
        concurrency=clients,
        dup_ratio=0.2,
        timeout=30.0,
        progress=False,
        http="raw",  # httpx costs ~1 ms CPU per request: it would be the bottleneck
    )


async def _drive(options: Options, check: bool) -> tuple[Tally, float, int, str]:
    """Run the simulator in this process; the tally, seconds, Δunique and a verdict."""
    tls = ssl.create_default_context()

    def make_http() -> RawClient:
        return RawClient(options.url, options.timeout)

    generator = Generator.from_options(options, SEED)
    load = Load(generator, RetryPolicy(options.retries), make_http, options.duration, seed=SEED)
    async with httpx.AsyncClient(base_url=options.url, verify=tls) as control:
        before = await fetch_stats(control) if check else None
        result = await run_load(load, Tally())
        if before is None:
            return result.tally, result.elapsed, 0, ""
        after = await fetch_stats(control)
    checks = verify(before, after, expectation(result))
    failed = [c.name for c in checks if not c.ok]
    verdict = "verified" if not failed else "FAILED: " + "; ".join(failed)
    return result.tally, result.elapsed, after.unique_processed - before.unique_processed, verdict


def _row(target: str, options: Options, child: Child, check: bool) -> Row:
    tally, elapsed, unique, verdict = trio.run(_drive, options, check)
    lat = tally.latencies
    return Row(
        target,
        options.id_style,
        options.batch,
        tally.events / elapsed,
        unique / elapsed if check else None,
        tally.requests / elapsed,
        percentile(lat, 50) * 1000,
        percentile(lat, 99) * 1000,
        child.peak_rss_mib(),
        verdict,
    )


def _events_for(batch: int, duration: float) -> int:
    # Enough that the duration, not the count, ends each run (bodies are encoded up front).
    return int(duration * (4_000 if batch == 1 else 120_000))


def run_bench(duration: float, clients: int, work: Path) -> list[Row]:
    rows: list[Row] = []
    for ids in ("uuid4", "uuid7"):
        total = _events_for(100, duration)
        gen = Generator.from_options(_options("", 100, ids, total, duration, clients), SEED)
        raw = run_raw(work / f"raw-{ids}", gen, total, duration)
        rows.append(Row("raw SQLite executemany", ids, 2000, raw.rows / raw.elapsed,
                        raw.unique / raw.elapsed, 0, None, None, None))  # fmt: skip
    for kind, target in (
        ("null", "null server (simulator ceiling)"),
        ("asgi", "bare hypercorn-trio"),
    ):
        batches = (1, 100) if kind == "null" else (1,)
        for batch in batches:
            with running("simulator.benchservers", [kind], ROOT) as child:
                opts = _options(
                    child.url, batch, "uuid4", _events_for(batch, duration), duration, clients
                )
                rows.append(_row(target, opts, child, check=False))
    for batch in (1, 100):
        for ids in ("uuid4", "uuid7"):
            data = work / f"server-{batch}-{ids}"
            args = ["--port", "0", "--data-dir", str(data), "--synchronous", "full"]
            with running("aggregator", args, ROOT) as child:
                opts = _options(
                    child.url, batch, ids, _events_for(batch, duration), duration, clients
                )
                rows.append(_row("aggregator (FULL)", opts, child, check=True))
    return rows


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()}"
    )


def markdown(rows: list[Row], duration: float, clients: int) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        f"Measured {today} on {machine()}; {clients} clients, {duration:g} s per run, "
        "20% re-sends, 64-byte payloads, all on 127.0.0.1.",
        "",
        "| target | ids | batch | events/s offered | unique/s committed | req/s | p50 ms | p99 ms "
        "| peak RSS MiB | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.target} | {r.ids} | {r.batch} | {_fmt(r.offered)} | {_fmt(r.committed)} "
            f"| {_fmt(r.requests or None)} | {_fmt(r.p50_ms, 1)} | {_fmt(r.p99_ms, 1)} "
            f"| {_fmt(r.rss_mib)} | {r.note} |"
        )
    lines += ["", *ratios(rows)]
    return "\n".join(lines)


def ratios(rows: list[Row]) -> list[str]:
    def find(target: str, ids: str, batch: int) -> Row | None:
        return next((r for r in rows if r.target.startswith(target) and r.ids == ids
                     and r.batch == batch), None)  # fmt: skip

    out = []
    for ids in ("uuid4", "uuid7"):
        server, raw = find("aggregator", ids, 100), find("raw SQLite", ids, 2000)
        if server and raw and server.committed and raw.committed:
            out.append(
                f"- server ÷ raw SQLite, {ids}, batch 100: {server.committed / raw.committed:.0%} "
                f"of the unique events/s (target ≥ 60%)"
            )
    bare = find("bare hypercorn", "uuid4", 1)
    for ids in ("uuid4", "uuid7"):
        single = find("aggregator", ids, 1)
        if bare and single:
            out.append(
                f"- single-event server ÷ bare hypercorn-trio, {ids}: "
                f"{single.requests / bare.requests:.0%} of the req/s (target ≥ 85%)"
            )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator.bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run (default 8)")
    parser.add_argument("--clients", type=int, default=50, help="parallel clients (default 50)")
    parser.add_argument("--json", type=Path, default=Path(".bench/results.json"),
                        help="also write the rows here (default .bench/results.json)")  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aggregator-bench-") as work:
        rows = run_bench(args.duration, args.clients, Path(work))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    sys.stdout.write(markdown(rows, args.duration, args.clients) + "\n")


if __name__ == "__main__":
    main()
