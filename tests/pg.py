"""PostgreSQL for the tests: a database of the session's own, a fresh schema per test.

The server is the one on this machine (``.ci/run`` starts it); ``TEST_POSTGRES_URL`` points
elsewhere. Nothing is left behind: schemas are dropped after each test, the database at the end.
Without a reachable server the PostgreSQL tests are skipped, and the run ends with a warning
saying how many; with ``TEST_REQUIRE_POSTGRES=1`` (``.ci/run`` sets it) they fail instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import trio

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRED = os.environ.get("TEST_REQUIRE_POSTGRES", "") not in ("", "0")
UNREACHABLE = "PostgreSQL is not reachable"


def admin(url: str = ADMIN_URL) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def create_database(encoding: str | None = None) -> str:
    """A uniquely named database (in ``encoding``, when given); returns its URL."""
    name = f"aggregator_test_{uuid.uuid4().hex[:12]}"
    options = ""
    if encoding is not None:
        options = f" ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"{options}')
    return database_url(name)


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_up(url: str) -> subprocess.CompletedProcess[str]:
    """``python -m aggregator`` on ``url``, for a start-up that must fail: its exit and output."""
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--port", "0", "--database-url", url],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=30,
    )


def create_schema(db_url: str) -> tuple[str, str]:
    """A fresh schema in ``db_url``: its name and a URL whose search_path starts there."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with admin(db_url) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{db_url}?options={quote(f'-csearch_path={schema}')}"


def drop_schema(db_url: str, schema: str) -> None:
    with admin(db_url) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def horizon(conn: psycopg.Connection[Any], boundary: str | None) -> tuple[bool, str]:
    """Whether the cluster's oldest running xid is at ``boundary`` or later (default: this
    snapshot's xmax, i.e. no transaction runs at all), and this snapshot's xmax."""
    row = conn.execute(
        "SELECT pg_snapshot_xmin(s) >= coalesce(%s::xid8, pg_snapshot_xmax(s)), "
        "pg_snapshot_xmax(s)::text FROM pg_current_snapshot() AS s",
        (boundary,),
    ).fetchone()
    assert row is not None
    return bool(row[0]), str(row[1])


async def wait_for_horizon(conn: psycopg.Connection[Any], held_back: trio.Event | None) -> None:
    """Return once every transaction of the cluster that began before this call has ended.

    Then a read's paging horizon (``xid < pg_snapshot_xmin(...)``, aggregator/store/pg_reader.py)
    is past whatever was committed before the call: a publish answered 200 is readable. An open
    transaction elsewhere on the cluster, even in another database, holds the horizon back; the
    store does not promise read-after-publish while one is open, so tests wait it out here.
    ``held_back`` is set when the horizon was found behind (tests of this wait use it)."""
    passed, boundary = await trio.to_thread.run_sync(horizon, conn, None)
    while not passed:
        if held_back is not None:
            held_back.set()
        await trio.sleep(0.01)  # sleep-ok: polls a real PostgreSQL server; callers' deadline
        passed, _ = await trio.to_thread.run_sync(horizon, conn, boundary)


def settle(url: str, deadline_seconds: float = 30) -> None:
    """``wait_for_horizon`` for synchronous tests: what was committed before is readable."""
    with admin(url) as conn:
        passed, boundary = horizon(conn, None)
        deadline = time.monotonic() + deadline_seconds
        while not passed:
            assert time.monotonic() < deadline, "a transaction on the cluster stays open"
            time.sleep(0.01)  # sleep-ok: polls a real PostgreSQL server with a deadline
            passed, _ = horizon(conn, boundary)
