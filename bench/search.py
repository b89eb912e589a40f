"""``python -m bench.search`` (``make bench-search``): what search costs and how fast it answers.

1. Ingest: ``SQLiteStore.commit`` (the writer's own call, no HTTP) of the same log-like events,
   2,000 per transaction, uuid4 ids, without and with the full-text index, in alternating
   rounds; the ratio within each round, then the median.
2. Latency: a store of ``--events`` such events with search on (filled through the same
   commit), then each query of ``QUERIES`` through a reader, as ``GET /events`` asks it (a page
   of 100, newest first), ``--repeat`` times: p50 and p99 in ms. With ``--postgres URL`` the
   same on a PostgreSQL store there (a fresh schema, dropped after).

The HTTP cost is ``make bench`` (its "search on" rows); this isolates the store's part.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aggregator.messages import EventRecord
from aggregator.store.query import EventQuery
from aggregator.store.search import parse
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from simulator.report import percentile

TRANSACTION = 2_000
WORDS = ("login", "failed", "ok", "timeout", "payment", "declined", "retry", "cache", "miss",
         "upstream", "connection", "reset", "invalid", "password", "token", "expired")  # fmt: skip
LEVELS = ("debug", "info", "info", "info", "warn", "error")
SERVICES = ("auth-service", "pay-service", "web", "search", "billing")
QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("q: a rare word (one user)", {"q": "u4242"}),
    ("q: a common word", {"q": "failed"}),
    ("q: a phrase", {"q": '"connection reset"'}),
    ("q: a prefix", {"q": "u424*"}),
    ("q: word + topic", {"q": "error declined", "topic": "pay"}),
    ("topic + since (last ~10 min)", {"topic": "auth", "since": "LATE"}),
    ("source, newest first", {"source": "web"}),
    ("no filter, newest first", {}),
]


def events(total: int, seed: int = 16) -> Iterator[EventRecord]:
    """Log-like events, ~200-byte payloads, one a second of the publishers' clocks."""
    rnd = random.Random(seed)
    for n in range(total):
        words = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 8)))
        payload = (
            f'{{"level": "{rnd.choice(LEVELS)}", "msg": "user u{rnd.randint(1, 100_000)} {words}",'
            f' "request_id": "{uuid.UUID(int=rnd.getrandbits(128))}",'
            f' "latency_ms": {rnd.randint(1, 5000)}}}'
        )
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_795_000_000 + n))
        yield EventRecord(
            rnd.choice(("auth", "pay", "web")), str(uuid.uuid4()), stamp,
            rnd.choice(SERVICES), payload,
        )  # fmt: skip


def fill(commit: Callable[[list[list[EventRecord]]], object], total: int) -> float:
    """Commit ``total`` events in transactions of TRANSACTION; events/s."""
    rows = list(events(total))
    started = time.perf_counter()
    for start in range(0, total, TRANSACTION):
        commit([rows[start : start + TRANSACTION]])
    return total / (time.perf_counter() - started)


FILTER_INDEXES = ("events_by_time", "events_by_source")


def ingest(rounds: int, total: int, work: Path) -> list[tuple[float, float, float]]:
    """Per round: events/s without the filters' indexes (the schema before search), with them
    (search off), and with the full-text index too (search on)."""
    out = []
    for index in range(rounds):
        rates = []
        for variant, search in (("before", False), ("off", False), ("on", True)):
            store = SQLiteStore(work / f"ingest-{index}-{variant}.sqlite3", search=search)
            try:
                if variant == "before":
                    for name in FILTER_INDEXES:
                        store.execute(f"DROP INDEX {name}")
                rates.append(fill(store.commit, total))
            finally:
                store.close()
        out.append((rates[0], rates[1], rates[2]))
        sys.stderr.write(f"ingest round {index + 1}: {' → '.join(f'{r:,.0f}' for r in rates)}\n")
    return out


def latency(reader: Any, late: str, repeat: int) -> list[tuple[str, float, float, int]]:
    rows = []
    for name, params in QUERIES:
        query = EventQuery(
            topic=params.get("topic"),
            source=params.get("source"),
            since=late if params.get("since") else None,
            search=parse(params["q"]) if "q" in params else None,
            descending=True,
            limit=101,
        )
        times, found = [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            found = len(reader.find(query))
            times.append(time.perf_counter() - started)
        rows.append((name, percentile(times, 50) * 1000, percentile(times, 99) * 1000, found))
    return rows


def late_since(total: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000", time.gmtime(1_795_000_000 + total - 600))


def sqlite_latency(total: int, repeat: int, work: Path) -> list[tuple[str, float, float, int]]:
    db = work / "latency.sqlite3"
    store = SQLiteStore(db, search=True)
    try:
        fill(store.commit, total)
    finally:
        store.close()
    reader = SQLiteReader(db, search=True)
    try:
        return latency(reader, late_since(total), repeat)
    finally:
        reader.close()


def postgres_latency(url: str, total: int, repeat: int) -> list[tuple[str, float, float, int]]:
    from aggregator.store.postgres import PostgresReader, PostgresStore
    from tests import pg

    db_url = url
    schema, url = pg.create_schema(db_url)
    try:
        store = PostgresStore(url, search=True)
        try:
            fill(store.commit, total)
        finally:
            store.close()
        with pg.admin(url) as conn:
            conn.execute("VACUUM ANALYZE events")
        reader = PostgresReader(url, search=True)
        try:
            return latency(reader, late_since(total), repeat)
        finally:
            reader.close()
    finally:
        pg.drop_schema(db_url, schema)


def table(title: str, rows: list[tuple[str, float, float, int]]) -> str:
    lines = [f"| {title} | p50 ms | p99 ms | rows |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {p50:.1f} | {p99:.1f} | {n} |" for name, p50, p99, n in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="ingest rounds (default 3; 0: none)")
    parser.add_argument("--ingest-events", type=int, default=100_000,
                        help="events per ingest run (default 100000)")  # fmt: skip
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="events in the store searched (default 1000000)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=50, help="runs of each query (default 50)")
    parser.add_argument("--postgres", metavar="URL", help="also on a PostgreSQL database")
    parser.add_argument("--no-sqlite", action="store_true", help="no SQLite latency table")
    args = parser.parse_args(argv)
    out = []
    with tempfile.TemporaryDirectory(prefix="aggregator-bench-search-") as work:
        if args.rounds:
            runs = ingest(args.rounds, args.ingest_events, Path(work))

            def ratio(name: str, pick: Callable[[tuple[float, float, float]], float]) -> str:
                values = [pick(run) for run in runs]
                each = ", ".join(f"{v:.0%}" for v in values)
                return f"{name} {statistics.median(values):.0%} (rounds: {each})"

            medians = [statistics.median(run[i] for run in runs) for i in range(3)]
            out.append(
                f"Store commit, {args.ingest_events:,} events, {TRANSACTION:,} per transaction, "
                f"events/s: without the filters' indexes {medians[0]:,.0f}, search off "
                f"{medians[1]:,.0f}, search on {medians[2]:,.0f}; "
                + ratio("off ÷ without,", lambda r: r[1] / r[0])
                + "; "
                + ratio("on ÷ off,", lambda r: r[2] / r[1])
            )
        if not args.no_sqlite:
            out += ["", table(f"SQLite, {args.events:,} events", sqlite_latency(
                args.events, args.repeat, Path(work)))]  # fmt: skip
    if args.postgres:
        out += ["", table(f"PostgreSQL, {args.events:,} events", postgres_latency(
            args.postgres, args.events, args.repeat))]  # fmt: skip
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
