"""Where events live. ``open_store`` and ``open_reader`` pick the backend from the Config."""

from __future__ import annotations

from aggregator.config import Config
from aggregator.store.base import (
    CommitResult,
    Counters,
    ReadStore,
    StoreBroken,
    StoreMismatch,
    StoreUnavailable,
    TopicCounts,
    WriteStore,
)
from aggregator.store.sqlite import SQLiteReader, SQLiteStore

__all__ = [
    "CommitResult",
    "Counters",
    "ReadStore",
    "StoreBroken",
    "StoreMismatch",
    "StoreUnavailable",
    "TopicCounts",
    "WriteStore",
    "describe_store",
    "open_reader",
    "open_store",
]


def describe_store(config: Config) -> str:
    """Where the events live, for logs (a PostgreSQL URL without its password)."""
    if config.database_url:
        from aggregator.store.postgres import redact

        return redact(config.database_url)
    return str(config.database_path)


def open_store(config: Config) -> WriteStore:
    """The write side; creates the data directory and migrates the schema. Blocking.

    With ``database_url`` set, PostgreSQL (imported only then: psycopg is an optional extra)."""
    if config.database_url:
        from aggregator.store.postgres import PostgresStore

        return PostgresStore(config.database_url)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(
        config.database_path, synchronous=config.synchronous, cache_mib=config.cache_mib
    )


def open_reader(config: Config) -> ReadStore:
    """One read connection; open the store first, so the schema exists. Blocking."""
    if config.database_url:
        from aggregator.store.postgres import PostgresReader

        return PostgresReader(config.database_url)
    return SQLiteReader(config.database_path)
