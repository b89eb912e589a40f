"""Shared fixtures. Trio tests are marked ``@pytest.mark.trio`` one by one (no trio_mode), so the
Textual tests, which run on asyncio, stay apart.

The contract suite runs on both backends: ``backend`` is parametrised (``[sqlite]``,
``[postgres]``) and gives the settings that select it; ``server`` uses it. Tests that open the
SQLite file themselves are marked ``sqlite_only`` and run on SQLite alone.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio

from aggregator.config import Config
from aggregator.service import Running, serve
from tests import pg


@dataclasses.dataclass
class Server:
    """An in-process aggregator on 127.0.0.1:0 and an HTTP client for it."""

    config: Config
    running: Running
    client: httpx.AsyncClient

    async def stats(self) -> dict[str, Any]:
        response = await self.client.get("/stats")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    async def publish(self, body: Any, **kwargs: Any) -> httpx.Response:
        return await self.client.post("/publish", json=body, **kwargs)

    async def all_events(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get("/events", params={"limit": 1000, **params})
        assert response.status_code == 200
        events: list[dict[str, Any]] = response.json()
        return events

    def lock_out_writer(self) -> Callable[[], None]:
        """Another connection takes the write lock, so the writer waits (and fails after SQLite's
        busy_timeout or PostgreSQL's lock_timeout, 5 s); call the result to release it."""
        conn: Any
        if self.config.database_url:
            conn = pg.admin(self.config.database_url)
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE events IN SHARE MODE")  # conflicts with INSERT
        else:
            conn = sqlite3.connect(self.config.database_path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")

        def release() -> None:
            conn.execute("ROLLBACK")
            conn.close()

        return release

    def stored_rows(self) -> list[tuple[str, str]]:
        """``(topic, event_id)`` of every row in the store, read from the database itself."""
        if self.config.database_url:
            with pg.admin(self.config.database_url) as conn:
                return conn.execute("SELECT topic, event_id FROM events ORDER BY seq").fetchall()
        db = sqlite3.connect(self.config.database_path)
        try:
            return db.execute("SELECT topic, event_id FROM events ORDER BY seq").fetchall()
        finally:
            db.close()


@asynccontextmanager
async def open_server(data_dir: Path, **settings: Any) -> AsyncIterator[Server]:
    """Serve until the block ends, then shut down gracefully (as SIGTERM would)."""
    config = Config(data_dir=data_dir, **{"port": 0, **settings})
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        running: Running = await nursery.start(partial(serve, config, shutdown=shutdown))
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
            yield Server(config, running, client)
        shutdown.set()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of this test session's own (its URL), dropped at the end."""
    try:
        url = pg.create_database()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {pg.ADMIN_URL} (.ci/run starts it): {exc}")
    try:
        yield url
    finally:
        pg.drop_database(url)


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """A store URL for one test: a fresh schema in the session's database, dropped after."""
    schema, url = pg.create_schema(pg_database)
    try:
        yield url
    finally:
        pg.drop_schema(pg_database, schema)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings that select a backend: none for SQLite, ``database_url`` for PostgreSQL."""
    if request.param == "postgres":
        return {"database_url": request.getfixturevalue("pg_url")}
    return {}


@pytest.fixture
async def server(tmp_path: Path, backend: dict[str, Any]) -> AsyncIterator[Server]:
    async with open_server(tmp_path / "data", **backend) as server:
        yield server
