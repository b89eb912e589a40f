"""The HTTP load of the door benchmarks: closed-loop clients posting prepared bodies."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable

import trio

from simulator.rawhttp import RawClient

# A check of one answer's body; it raises when the request did not do what the row measures.
Check = Callable[[str, bytes], None]


async def drive_http(
    url: str,
    path: str,
    pool: Iterable[bytes],
    *,
    per_body: int,
    clients: int,
    seconds: float,
    headers: dict[str, str],
    ok: tuple[int, ...] = (200,),
    check: Check | None = None,
) -> float:
    """Acknowledged items (``per_body`` a request) per second over ``seconds``; the clients
    share ``pool``, each sending its next body once the last was answered."""
    acked = 0
    queue = iter(pool)

    async def client() -> None:
        nonlocal acked
        async with RawClient(url, 60) as http:
            for body in queue:
                response = await http.post(path, content=body, headers=headers)
                if response.status_code not in ok:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
                if check is not None:
                    check(path, response.content)
                acked += per_body

    started = time.perf_counter()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(client)
    return acked / (time.perf_counter() - started)


def load_parser(description: str, clients_help: str) -> argparse.ArgumentParser:
    """The options every door benchmark takes: rounds, seconds a row, clients."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--rounds",
        metavar="N",
        type=int,
        default=3,
        help="rounds; the table shows medians (default %(default)s)",
    )
    parser.add_argument(
        "--duration",
        metavar="SECONDS",
        type=float,
        default=8.0,
        help="seconds each row sends (default %(default)s)",
    )
    parser.add_argument(
        "--clients", metavar="N", type=int, default=50, help=clients_help + " (default %(default)s)"
    )
    return parser
