"""``python -m simulator.bench`` (``make bench``): the README's benchmark table, in one run.

Side by side, on this machine, all on 127.0.0.1, every run bounded by ``--duration``: the
store's own commit without HTTP (its ceiling, ``rawsqlite.py``), a bare ASGI app on
hypercorn-trio (the HTTP floor), the simulator against a null server (its own ceiling), and the
real server (a subprocess, synchronous FULL, a fresh store per run) with batch 1 and 100, uuid4
and uuid7 ids, 50 clients.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import ssl
import statistics
import sys
import tempfile
from collections.abc import Callable
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


async def _drive(options: Options, check: bool, seed: int = SEED) -> tuple[Tally, float, int, str]:
    """Run the simulator in this process; the tally, seconds, Δunique and a verdict."""
    tls = ssl.create_default_context()

    def make_http() -> RawClient:
        return RawClient(options.url, options.timeout)

    generator = Generator.from_options(options, seed)
    load = Load(generator, RetryPolicy(options.retries), make_http, options.duration, seed=seed)
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


SEARCH_TARGET = "aggregator (FULL, search on)"


def run_round(duration: float, clients: int, work: Path, *, only_search: bool = False) -> list[Row]:
    """One row per target; each server run right after the reference it is compared with, so
    that the ratios of a round are measured minutes apart at most on a shared machine. With
    ``only_search``, the batch-100 server runs alone, without and with the full-text index."""
    rows: list[Row] = []

    def reference(kind: str, target: str, batch: int) -> None:
        with running("simulator.benchservers", [kind], ROOT) as child:
            opts = _options(child.url, batch, "uuid4", _events_for(batch, duration), duration,
                            clients)  # fmt: skip
            rows.append(_row(target, opts, child, check=False))

    def server(batch: int, ids: str, *, search: bool = False) -> None:
        data = work / f"server-{batch}-{ids}-{search}"
        args = ["--port", "0", "--data-dir", str(data), "--synchronous", "full"]
        args += ["--search", "on" if search else "off"]
        with running("aggregator", args, ROOT) as child:
            opts = _options(child.url, batch, ids, _events_for(batch, duration), duration, clients)
            target = SEARCH_TARGET if search else "aggregator (FULL)"
            rows.append(_row(target, opts, child, check=True))

    if only_search:
        for ids in ("uuid4", "uuid7"):
            server(100, ids)
            server(100, ids, search=True)
        return rows

    for batch in (1, 100):
        reference("null", "null server (simulator ceiling)", batch)
    reference("asgi", "bare hypercorn-trio", 1)
    for ids in ("uuid4", "uuid7"):
        server(1, ids)
    for ids in ("uuid4", "uuid7"):
        total = _events_for(100, duration)
        gen = Generator.from_options(_options("", 100, ids, total, duration, clients), SEED)
        raw = run_raw(work / f"raw-{ids}", gen, total, duration)
        rows.append(Row("store commit (no HTTP)", ids, 2000, raw.rows / raw.elapsed,
                        raw.unique / raw.elapsed, 0, None, None, None))  # fmt: skip
        server(100, ids)
        server(100, ids, search=True)  # right after: the index's cost within one round
    return rows


def median_rows(rounds: list[list[Row]]) -> list[Row]:
    """Each target's median over the rounds, field by field; a note is kept only if every
    round agrees (a failed verification in any round shows)."""

    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    out = []
    for same in zip(*rounds, strict=True):
        notes = {r.note for r in same}
        out.append(
            Row(
                same[0].target,
                same[0].ids,
                same[0].batch,
                statistics.median(r.offered for r in same),
                median([r.committed for r in same]),
                statistics.median(r.requests for r in same),
                median([r.p50_ms for r in same]),
                median([r.p99_ms for r in same]),
                median([r.rss_mib for r in same]),
                notes.pop() if len(notes) == 1 else "; ".join(sorted(n for n in notes if n)),
            )
        )
    return out


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


def markdown(rounds: list[list[Row]], duration: float, clients: int) -> str:
    today = datetime.date.today().isoformat()
    n = len(rounds)
    what = "one round" if n == 1 else f"medians of {n} rounds"
    lines = [
        f"Measured {today} on {machine()}; {clients} clients, {duration:g} s per run, "
        f"20% re-sends, 64-byte payloads, all on 127.0.0.1; {what}.",
        "",
        "| target | ids | batch | events/s offered | unique/s committed | req/s | p50 ms | p99 ms "
        "| peak RSS MiB | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in median_rows(rounds):
        lines.append(
            f"| {r.target} | {r.ids} | {r.batch} | {_fmt(r.offered)} | {_fmt(r.committed)} "
            f"| {_fmt(r.requests or None)} | {_fmt(r.p50_ms, 1)} | {_fmt(r.p99_ms, 1)} "
            f"| {_fmt(r.rss_mib)} | {r.note} |"
        )
    lines += ["", *ratios(rounds)]
    return "\n".join(lines)


def _find(rows: list[Row], target: str, ids: str, batch: int) -> Row | None:
    return next((r for r in rows if r.target.startswith(target) and r.ids == ids
                 and r.batch == batch), None)  # fmt: skip


def ratios(rounds: list[list[Row]]) -> list[str]:
    """Each ratio computed within a round (server and reference measured back to back), then
    the median over the rounds, with every round's value."""

    def line(name: str, target: str, pick: Callable[[list[Row]], float | None]) -> str | None:
        values = [v for v in (pick(rows) for rows in rounds) if v is not None]
        if not values:
            return None
        each = ", ".join(f"{v:.0%}" for v in values)
        spread = f" (rounds: {each})" if len(values) > 1 else ""
        return f"- {name}: {statistics.median(values):.0%}{spread} (target ≥ {target})"

    def unique_ratio(ids: str) -> Callable[[list[Row]], float | None]:
        def pick(rows: list[Row]) -> float | None:
            server, raw = (
                _find(rows, "aggregator", ids, 100),
                _find(rows, "store commit", ids, 2000),
            )
            if server and raw and server.committed and raw.committed:
                return server.committed / raw.committed
            return None

        return pick

    def single_ratio(ids: str) -> Callable[[list[Row]], float | None]:
        def pick(rows: list[Row]) -> float | None:
            single, bare = (
                _find(rows, "aggregator", ids, 1),
                _find(rows, "bare hypercorn", "uuid4", 1),
            )
            return single.requests / bare.requests if single and bare and bare.requests else None

        return pick

    def search_ratio(ids: str) -> Callable[[list[Row]], float | None]:
        def pick(rows: list[Row]) -> float | None:
            on, off = _find(rows, SEARCH_TARGET, ids, 100), _find(rows, "aggregator", ids, 100)
            return (
                on.committed / off.committed
                if on and off and on.committed and off.committed
                else None
            )

        return pick

    out = (
        [
            line(
                f"search on ÷ off, {ids}, batch 100, unique events/s",
                "80% for search on by default",
                search_ratio(ids),
            )
            for ids in ("uuid4", "uuid7")
        ]
        + [
            line(
                f"server ÷ store commit, {ids}, batch 100, unique events/s",
                "60%",
                unique_ratio(ids),
            )
            for ids in ("uuid4", "uuid7")
        ]
        + [
            line(
                f"single-event server ÷ bare hypercorn-trio, {ids}, req/s", "85%", single_ratio(ids)
            )
            for ids in ("uuid4", "uuid7")
        ]
    )
    return [o for o in out if o]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator.bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run (default 8)")
    parser.add_argument("--clients", type=int, default=50, help="parallel clients (default 50)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of runs; the table shows medians (default 3)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path(".bench/results.json"),
                        help="also write the rows here (default .bench/results.json)")  # fmt: skip
    parser.add_argument("--only-search", action="store_true",
                        help="only the batch-100 server without and with search")  # fmt: skip
    args = parser.parse_args(argv)
    rounds = []
    for index in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="aggregator-bench-") as work:
            rounds.append(
                run_round(args.duration, args.clients, Path(work), only_search=args.only_search)
            )
        sys.stderr.write(f"round {index + 1} of {args.rounds} done\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps([[dataclasses.asdict(r) for r in rows] for rows in rounds], indent=2)
    )
    sys.stdout.write(markdown(rounds, args.duration, args.clients) + "\n")


if __name__ == "__main__":
    main()
