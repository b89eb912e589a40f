"""Bounded benchmark: events/s with 1, 2 and 3 aggregator processes on one PostgreSQL database.

``python -m bench.postgres [--events N] [--clients C] [--batch B]`` (``make
bench-postgres``). For each process count it starts the processes on a fresh schema of a
throw-away database, has C clients publish N events in batches of B (unique uuid4 ids, client k
sends to process k mod n), and reports committed events per second; SQLite with one process is the
reference row. Everything runs on this one machine, so the figures show the overhead of sharing a
database more than any scaling: the processes, PostgreSQL and the load generator share its cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx
import trio

from tests import pg
from tests.support import ServerProcess, event

SERVER_ARGS = ["--port", "0", "--readers", "1"]


async def publish(urls: Sequence[str], events: int, clients: int, batch: int) -> float:
    """Seconds for ``clients`` to get ``events`` acknowledged (every answer must be 200)."""
    per_client = events // clients

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=urls[k % len(urls)], timeout=60) as http:
            for _ in range(per_client // batch):
                body = [event(f"t{i % 8}", str(uuid.uuid4())) for i in range(batch)]
                response = await http.post("/publish", json=body)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text}")

    start = time.perf_counter()
    with trio.fail_after(600):  # bounded, whatever happens
        async with trio.open_nursery() as nursery:
            for k in range(clients):
                nursery.start_soon(client, k)
    return time.perf_counter() - start


def run(label: str, argv_per_process: list[list[str]], args: argparse.Namespace) -> str:
    servers = [ServerProcess([*SERVER_ARGS, *argv]) for argv in argv_per_process]
    try:
        urls = [server.wait_ready() for server in servers]
        seconds = trio.run(publish, urls, args.events, args.clients, args.batch)
    finally:
        for server in servers:
            server.kill()
    sent = args.events // args.clients // args.batch * args.batch * args.clients
    return f"| {label} | {len(servers)} | {sent} | {seconds:.1f} | {sent / seconds:,.0f} |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.postgres",
        description="Events/s with 1, 2 and 3 aggregator processes on one PostgreSQL database "
        "(TEST_POSTGRES_URL, default the server on 127.0.0.1:5432), and SQLite with one "
        "process as the reference row. Prints one Markdown table row per run.",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=60_000,
        metavar="N",
        help="events published per row, split over the clients (default: %(default)s)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=12,
        metavar="N",
        help="concurrent publishers; client k sends to process k mod the process count "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=100,
        metavar="N",
        help="events per POST /publish request, unique uuid4 ids (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    rows = [
        "| store | processes | events | seconds | events/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(run("SQLite (reference)", [["--data-dir", str(Path(tmp) / "s")]], args))
        print(rows[-1], flush=True)
    db = pg.create_database()
    try:
        for n in (1, 2, 3):
            schema, url = pg.create_schema(db)
            try:
                rows.append(run("PostgreSQL", [["--database-url", url]] * n, args))
                print(rows[-1], flush=True)
            finally:
                pg.drop_schema(db, schema)
    finally:
        pg.drop_database(db)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
