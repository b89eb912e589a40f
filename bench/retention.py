"""``python -m bench.retention``: publish latency with retention deleting as fast as events come,
against the same store without retention, in alternating rounds.

Each round pre-fills two stores with the same events (``simulator/prefill.py``), then runs the
load of ``make bench`` (batch 100, uuid4, 50 clients, 20% re-sends) against a server on each: one
without retention, one with ``AGGREGATOR_RETENTION_BYTES`` set to the size the store had after
the pre-fill, so every event that comes in makes an old one go. The table shows each round and
the ratio of the p99s, the target being at most 1.2.
"""

from __future__ import annotations

import argparse
import datetime
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

import trio

from aggregator.store.sqlite_retention import used_bytes
from simulator.bench import ROOT, _drive, _options, machine
from simulator.benchscale import top_up
from simulator.procs import running
from simulator.report import percentile


def run(data: Path, retention_bytes: int, duration: float, seed: int) -> tuple[float, float, int]:
    """Unique events/s, publish p99 ms, events expired during the run."""
    args = ["--port", "0", "--data-dir", str(data), "--synchronous", "full"]
    args += ["--retention-bytes", str(retention_bytes)]
    with running("aggregator", args, ROOT) as child:
        opts = _options(child.url, 100, "uuid4", int(duration * 120_000), duration, 50)
        tally, elapsed, unique, verdict = trio.run(_drive, opts, True, seed)
    if verdict != "verified":
        raise RuntimeError(verdict)
    conn = sqlite3.connect(data / "aggregator.sqlite3")
    try:
        (expired,) = conn.execute("SELECT expired FROM counters").fetchone()
    finally:
        conn.close()
    return unique / elapsed, percentile(tally.latencies, 99) * 1000, expired


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    parser.add_argument(
        "--events",
        metavar="N",
        type=int,
        default=500_000,
        help="events pre-filled per store (default %(default)s)",
    )
    parser.add_argument(
        "--duration",
        metavar="SECONDS",
        type=float,
        default=15.0,
        help="seconds of load per run (default %(default)s)",
    )
    parser.add_argument(
        "--rounds", metavar="N", type=int, default=3, help="rounds of runs (default %(default)s)"
    )
    args = parser.parse_args(argv)
    rows, ratios = [], []
    for index in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-retention-") as work:
            without, limited = Path(work) / "without", Path(work) / "with"
            for data in (without, limited):
                top_up(ROOT, data, args.events, seed=50 + index)
            conn = sqlite3.connect(limited / "aggregator.sqlite3")
            limit = used_bytes(conn)
            conn.close()
            seed = 900 + index
            off = run(without, 0, args.duration, seed)
            on = run(limited, limit, args.duration, seed)
        rows.append(
            f"| {index + 1} | {off[0]:,.0f} | {off[1]:.1f} | {on[0]:,.0f} | {on[1]:.1f} "
            f"| {on[2]:,} | {on[1] / off[1]:.2f} |"
        )
        ratios.append(on[1] / off[1])
        sys.stderr.write(rows[-1] + "\n")
    sys.stdout.write(
        f"Measured {datetime.date.today().isoformat()} on {machine()}; {args.events:,} events "
        f"pre-filled, batch 100, 50 clients, uuid4, {args.duration:g} s per run.\n\n"
        "| round | unique/s without | p99 ms without | unique/s with retention "
        "| p99 ms with | events expired | p99 with ÷ without |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        + "\n".join(rows)
        + f"\n\nMedian p99 ratio: {statistics.median(ratios):.2f} (target ≤ 1.20)\n"
    )


if __name__ == "__main__":
    main()
