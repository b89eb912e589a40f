"""The raw SQLite ceiling: ``executemany`` of the server's own INSERT into the server's own schema,
with its pragmas, on the same key distribution the simulator sends, without HTTP or trio.

The schema comes from ``aggregator.store.sqlite`` (the store itself creates the file, so the
migrations and pragmas are the server's, not a copy); the page cache is the Config default.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from aggregator.config import Config
from aggregator.store.sqlite import (
    INSERT_EVENT,
    WAL_AUTOCHECKPOINT_PAGES,
    SQLiteStore,
    utc_now,
)
from simulator.generator import Generator

ROWS_PER_TRANSACTION = 2_000  # about what group commit merges under load


@dataclass(frozen=True, slots=True)
class RawResult:
    rows: int
    unique: int
    elapsed: float


def _rows(generator: Generator, total: int) -> list[tuple[str, str, str, str, str, str]]:
    """The events of the run as rows, duplicates included, in send order."""
    received_at = utc_now()
    rows: list[tuple[str, str, str, str, str, str]] = []
    index = 0
    while len(rows) < total and (batch := generator.batch(index)) is not None:
        for key in batch.key_ids:
            topic, event_id = generator.key(key)
            payload = generator.event(key).split(b'"payload":', 1)[1][:-1].decode()
            rows.append(
                (topic, event_id, "2026-11-21T10:00:00Z", "simulator", payload, received_at)
            )
        index += 1
    return rows[:total]


def run_raw(directory: Path, generator: Generator, total: int, duration: float) -> RawResult:
    """Insert up to ``total`` rows (stopping after ``duration`` seconds) into a fresh store."""
    config = Config(data_dir=directory, synchronous="full")
    directory.mkdir(parents=True, exist_ok=True)
    SQLiteStore(config.database_path, synchronous=config.synchronous).close()  # schema
    rows = _rows(generator, total)
    conn = sqlite3.connect(config.database_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {config.synchronous.upper()}")
        conn.execute(f"PRAGMA cache_size = {-config.cache_mib * 1024}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        started = time.perf_counter()
        done = unique = 0
        while done < len(rows) and time.perf_counter() - started < duration:
            chunk = rows[done : done + ROWS_PER_TRANSACTION]
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT_EVENT, chunk)
            conn.execute("COMMIT")
            unique += conn.total_changes - before
            done += len(chunk)
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return RawResult(done, unique, elapsed)
