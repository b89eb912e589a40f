"""PostgreSQL for the tests: a database of the session's own, a fresh schema per test.

The server is the one on this machine (``.ci/run`` starts it); ``TEST_POSTGRES_URL`` points
elsewhere. Nothing is left behind: schemas are dropped after each test, the database at the end.
"""

from __future__ import annotations

import os
import uuid
from typing import Any
from urllib.parse import quote

import psycopg

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin(url: str = ADMIN_URL) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def create_database() -> str:
    """A uniquely named database; returns its URL."""
    name = f"aggregator_test_{uuid.uuid4().hex[:12]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(name)


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_schema(db_url: str) -> tuple[str, str]:
    """A fresh schema in ``db_url``: its name and a URL whose search_path starts there."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with admin(db_url) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{db_url}?options={quote(f'-csearch_path={schema}')}"


def drop_schema(db_url: str, schema: str) -> None:
    with admin(db_url) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
