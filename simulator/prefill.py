"""``python -m simulator.prefill DATA_DIR --events N``: fill a store with N new events, fast.

The events go through the store's own write path (``open_store`` and ``WriteStore.commit``, the
calls the writer actor makes), in large transactions and without HTTP, so a benchmark can start
from a store of millions of events in minutes. They look like the simulator's: uuid4 ids over a
few topics, payloads of about 64 bytes; a seed of their own, so they never collide with a
benchmark's keys. Run it on a store no server has open.

Imports only the aggregator and the standard library: the scale benchmark also runs it as a file
against an older checkout (``PYTHONPATH=OLD python simulator/prefill.py``), to measure before.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from aggregator.config import Config
from aggregator.messages import EventRecord
from aggregator.store import WriteStore, open_store

TOPICS = 5
TRANSACTION_EVENTS = 20_000  # larger than group commit merges: fewer index pages per event


def records(count: int, seed: int, start: int = 0) -> Iterator[EventRecord]:
    """``count`` distinct events; the same seed and start give the same events."""
    rng = random.Random(seed)
    topics = [f"prefill.t{i}" for i in range(TOPICS)]
    pad = f"{seed:016x}" * 3
    for key in range(start, start + count):
        h = f"{rng.getrandbits(128) & ~(0xF << 76) | (4 << 76):032x}"  # a uuid4-shaped id
        yield EventRecord(
            topics[key % TOPICS],
            f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
            f"2026-11-21T{key // 3_600_000 % 24:02d}:{key // 60_000 % 60:02d}:"
            f"{key // 1000 % 60:02d}.{key % 1000:03d}Z",
            "prefill",
            f'{{"k":{key},"pad":"{pad}"}}',
        )


def _commit(store: WriteStore, batch: list[EventRecord]) -> int:
    """Commit, then the upkeep the writer does between commits (index merges); a store from
    before upkeep existed (the benchmark's baseline) has none."""
    stored = store.commit([batch]).stored
    maintain = getattr(store, "maintain", None)
    if maintain is not None:
        from aggregator.store.base import Retention

        while maintain(Retention(), len(batch)).more:
            pass
    return stored


def prefill(
    data_dir: Path, events: int, *, seed: int, transaction_events: int = TRANSACTION_EVENTS
) -> tuple[int, float]:
    """Commit ``events`` new events into the store in ``data_dir``; (stored, seconds)."""
    store = open_store(Config(data_dir=data_dir))
    stored = 0
    started = last = time.perf_counter()
    try:
        batch: list[EventRecord] = []
        for record in records(events, seed):
            batch.append(record)
            if len(batch) == transaction_events:
                stored += _commit(store, batch)
                batch = []
                now = time.perf_counter()
                if now - last >= 10:
                    rate = stored / (now - started)
                    sys.stderr.write(f"prefill: {stored:,} stored, {rate:,.0f}/s\n")
                    last = now
        if batch:
            stored += _commit(store, batch)
    finally:
        store.close()
    return stored, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator.prefill", description=__doc__)
    parser.add_argument("data_dir", type=Path, help="the store's directory (created if missing)")
    parser.add_argument("--events", type=int, required=True, help="new events to store")
    parser.add_argument("--seed", type=int, default=1, help="seed of the event ids (default 1)")
    parser.add_argument("--transaction-events", type=int, default=TRANSACTION_EVENTS,
                        help=f"events per transaction (default {TRANSACTION_EVENTS})")  # fmt: skip
    args = parser.parse_args(argv)
    if args.events < 0 or args.transaction_events < 1:
        parser.error("--events must be at least 0 and --transaction-events at least 1")
    stored, seconds = prefill(
        args.data_dir, args.events, seed=args.seed, transaction_events=args.transaction_events
    )
    sys.stdout.write(
        f"stored {stored:,} events in {seconds:.1f} s ({stored / max(seconds, 1e-9):,.0f}/s)\n"
    )


if __name__ == "__main__":
    main()
