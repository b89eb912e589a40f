"""Where events live. ``open_store`` and ``open_reader`` pick the backend from the Config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aggregator.config import Config
from aggregator.store.base import (
    CommitResult,
    Counters,
    ReadStore,
    StoreBroken,
    StoreContention,
    StoreMismatch,
    StoreUnavailable,
    TopicCounts,
    WriteStore,
)
from aggregator.store.sqlite import SQLiteReader, SQLiteStore

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "CommitResult",
    "Counters",
    "ReadStore",
    "StoreBroken",
    "StoreContention",
    "StoreMismatch",
    "StoreUnavailable",
    "TopicCounts",
    "WriteStore",
    "describe_store",
    "open_reader",
    "open_store",
]


def _postgres() -> ModuleType:
    """The PostgreSQL store, imported only when asked for: psycopg is an optional extra."""
    try:
        from aggregator.store import postgres
    except ImportError as exc:
        raise StoreUnavailable(
            f"AGGREGATOR_DATABASE_URL needs psycopg ({exc}); "
            "install it from the repository with: .venv/bin/pip install -e '.[postgres]'"
        ) from exc
    return postgres


def describe_store(config: Config) -> str:
    """Where the events live, for logs (a PostgreSQL URL without its password)."""
    if config.database_url:
        redacted: str = _postgres().redact(config.database_url)
        return redacted
    return str(config.database_path)


def open_store(config: Config) -> WriteStore:
    """The write side; creates the data directory and migrates the schema. Blocking.

    With ``database_url`` set, PostgreSQL."""
    if config.database_url:
        store: WriteStore = _postgres().PostgresStore(config.database_url)
        return store
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(
        config.database_path, synchronous=config.synchronous, cache_mib=config.cache_mib
    )


def open_reader(config: Config) -> ReadStore:
    """One read connection; open the store first, so the schema exists. Blocking."""
    if config.database_url:
        reader: ReadStore = _postgres().PostgresReader(config.database_url)
        return reader
    return SQLiteReader(config.database_path)
