"""Shared fixtures. Trio tests are marked ``@pytest.mark.trio`` one by one (no trio_mode), so the
Textual tests, which run on asyncio, stay apart.

The contract suite runs on both backends: ``backend`` is parametrised (``[sqlite]``,
``[postgres]``) and gives the settings that select it; ``server`` uses it. Tests that open the
SQLite file themselves are marked ``sqlite_only`` and run on SQLite alone. PostgreSQL missing is
a skip with a warning at the end of the run, or a failure with ``TEST_REQUIRE_POSTGRES=1`` (CI).
"""

from __future__ import annotations

import dataclasses
import gc
import sqlite3
import threading
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
from aggregator.store import Clock, utc_now
from aggregator.store.checkpointer import Checkpointer
from tests import pg


@dataclasses.dataclass
class Server:
    """An in-process aggregator on 127.0.0.1:0 and an HTTP client for it."""

    config: Config
    running: Running
    client: httpx.AsyncClient
    # PostgreSQL: a connection that watches the paging horizon, and whether a publish found it
    # held back by a transaction open elsewhere on the cluster (see ``publish``).
    horizon: psycopg.Connection[Any] | None = None
    held_back: trio.Event = dataclasses.field(default_factory=trio.Event)

    async def stats(self) -> dict[str, Any]:
        response = await self.client.get("/stats")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    async def publish(self, body: Any, **kwargs: Any) -> httpx.Response:
        """POST /publish; on PostgreSQL a 200 returns once a read can see what it stored.

        PostgreSQL reads hold back rows above the paging horizon, which any transaction open on
        the cluster (another test session's, autovacuum's) keeps below a fresh commit for as
        long as it runs; so this waits for it, and a read right after sees the publish. Tests
        that read while holding a transaction open themselves post with ``client`` instead."""
        response = await self.client.post("/publish", json=body, **kwargs)
        if response.status_code == 200 and self.horizon is not None:
            await pg.wait_for_horizon(self.horizon, self.held_back)
        return response

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
async def open_server(
    data_dir: Path, clock: Clock = utc_now, **settings: Any
) -> AsyncIterator[Server]:
    """Serve until the block ends, then shut down gracefully (as SIGTERM would). ``clock`` is
    the wall clock of ``received_at`` and of retention by age."""
    # The read process is its own tests' (tests/test_reads.py): in-process servers answer reads.
    config = Config(data_dir=data_dir, **{"port": 0, "read_process": False, **settings})
    shutdown = trio.Event()
    horizon = None
    if config.database_url:
        horizon = await trio.to_thread.run_sync(pg.admin, config.database_url)
    try:
        async with trio.open_nursery() as nursery:
            start = partial(serve, config, shutdown=shutdown, clock=clock)
            running: Running = await nursery.start(start)
            async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
                yield Server(config, running, client, horizon)
            shutdown.set()
    finally:
        if horizon is not None:
            horizon.close()


@pytest.fixture(autouse=True)
def _stop_checkpointers_left_running() -> Iterator[None]:
    """A store a test leaves open keeps its checkpointer thread, which wakes every second
    into SQLite. mutmut forks each mutant's run from the process that ran the tests (its stats
    and clean runs): a fork while such a thread holds one of SQLite's mutexes leaves the child
    blocked at its first open until mutmut's timeout, which it counts as a kill. Stopped here
    (only the thread: the store's own connection does nothing by itself)."""
    yield
    if any(thread.name == "sqlite-checkpointer" for thread in threading.enumerate()):
        for obj in gc.get_objects():
            if isinstance(obj, Checkpointer):
                obj.close()


@pytest.fixture
def frozen_wal(monkeypatch: pytest.MonkeyPatch) -> None:
    """No WAL checkpoints while a test counts its transactions (``tests/wal.py``): a complete
    checkpoint lets the writer's next transaction start the WAL over, erasing the count."""
    monkeypatch.setattr(Checkpointer, "_checkpoint", lambda self: (0, 0))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of this test session's own (its URL), dropped at the end."""
    try:
        url = pg.create_database()
    except psycopg.OperationalError as exc:
        reason = f"{pg.UNREACHABLE} at {pg.ADMIN_URL} (.ci/run starts it): {exc}"
        if pg.REQUIRED:
            pytest.fail(f"{reason}; TEST_REQUIRE_POSTGRES is set, so that is a failure")
        pytest.skip(reason)
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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly, last, that PostgreSQL tests did not run: a green run without them proves
    nothing about the PostgreSQL store."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if pg.UNREACHABLE in str(getattr(report, "longrepr", ""))
    ]
    if skipped:
        terminalreporter.write_sep(
            "!",
            f"{len(skipped)} PostgreSQL tests were SKIPPED: {pg.UNREACHABLE} at {pg.ADMIN_URL} "
            "(start it, or point TEST_POSTGRES_URL at one; CI sets TEST_REQUIRE_POSTGRES=1)",
            red=True,
            bold=True,
        )
