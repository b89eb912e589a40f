"""Where events live. ``open_store`` and ``open_reader`` pick the backend from the Config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aggregator.config import Config
from aggregator.store.base import (
    Clock,
    CommitResult,
    Counters,
    ReadStore,
    Retention,
    StoreBroken,
    StoreContention,
    StoreDamaged,
    StoreMismatch,
    StoreUnavailable,
    TopicCounts,
    Upkeep,
    WriteStore,
    utc_now,
)
from aggregator.store.sqlite import SQLiteReader, SQLiteStore, wal_restart_pages
from aggregator.store.sqlite_check import CheckInterrupted, IntegrityCheck

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "CheckInterrupted",
    "Clock",
    "CommitResult",
    "Counters",
    "IntegrityCheck",
    "ReadStore",
    "Retention",
    "StoreBroken",
    "StoreContention",
    "StoreDamaged",
    "StoreMismatch",
    "StoreUnavailable",
    "TopicCounts",
    "Upkeep",
    "WriteStore",
    "describe_store",
    "open_integrity_check",
    "open_reader",
    "open_store",
    "utc_now",
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


def open_store(config: Config, *, clock: Clock = utc_now) -> WriteStore:
    """The write side; creates the data directory and migrates the schema. Blocking.

    With ``database_url`` set, PostgreSQL. ``clock`` gives ``received_at`` and the "now" of
    retention by age."""
    if config.database_url:
        store: WriteStore = _postgres().PostgresStore(config.database_url, clock=clock)
        return store
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(
        config.database_path,
        synchronous=config.synchronous,
        cache_mib=config.cache_mib,
        clock=clock,
        wal_pages=wal_restart_pages(config.retention_bytes),
    )


def open_reader(config: Config) -> ReadStore:
    """One read connection; open the store first, so the schema exists. Blocking."""
    if config.database_url:
        reader: ReadStore = _postgres().PostgresReader(config.database_url)
        return reader
    return SQLiteReader(config.database_path)


def open_integrity_check(config: Config) -> IntegrityCheck | None:
    """The store's background integrity check; None when it is off, or for PostgreSQL (no
    whole-database check of this kind is run there)."""
    if config.database_url or config.integrity_check == "off":
        return None
    return IntegrityCheck(config.database_path, config.integrity_check)
