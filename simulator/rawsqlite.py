"""The store's ceiling: ``SQLiteStore.commit``, the writer's own call, with the server's schema
and pragmas, on the same key distribution the simulator sends, without HTTP or trio.

Transactions of ``ROWS_PER_TRANSACTION`` events, about what group commit merges under load; the
page cache is the Config default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from aggregator.config import Config
from aggregator.messages import EventRecord
from aggregator.store.sqlite import SQLiteStore
from simulator.generator import Generator

ROWS_PER_TRANSACTION = 2_000  # about what group commit merges under load


@dataclass(frozen=True, slots=True)
class RawResult:
    rows: int
    unique: int
    elapsed: float


def _rows(generator: Generator, total: int) -> list[EventRecord]:
    """The events of the run, duplicates included, in send order."""
    rows: list[EventRecord] = []
    index = 0
    while len(rows) < total and (batch := generator.batch(index)) is not None:
        for key in batch.key_ids:
            topic, event_id = generator.key(key)
            payload = generator.event(key).split(b'"payload":', 1)[1][:-1].decode()
            rows.append(EventRecord(topic, event_id, "2026-11-21T10:00:00Z", "simulator", payload))
        index += 1
    return rows[:total]


def run_raw(directory: Path, generator: Generator, total: int, duration: float) -> RawResult:
    """Commit up to ``total`` events (stopping after ``duration`` seconds) into a fresh store."""
    config = Config(data_dir=directory, synchronous="full")
    directory.mkdir(parents=True, exist_ok=True)
    rows = _rows(generator, total)
    store = SQLiteStore(
        config.database_path, synchronous=config.synchronous, cache_mib=config.cache_mib
    )
    try:
        started = time.perf_counter()
        done = unique = 0
        while done < len(rows) and time.perf_counter() - started < duration:
            chunk = rows[done : done + ROWS_PER_TRANSACTION]
            unique += store.commit([chunk]).stored
            done += len(chunk)
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    return RawResult(done, unique, elapsed)
