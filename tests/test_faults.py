"""Faults of a real server process: the disk fills up mid-load, then space returns.

The limit is a real one the kernel enforces, with no hook in the server: ``RLIMIT_FSIZE`` of the
server process, lowered and raised from outside with ``prlimit`` (Python ignores SIGXFSZ, so a
write past the limit fails with EFBIG as a full disk fails with ENOSPC).
"""

from __future__ import annotations

import resource
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ROOT, event, running_server, wait_for

PAYLOAD = {"text": "x" * 2000}


def file_sizes(data: Path) -> int:
    return max(p.stat().st_size for p in data.iterdir() if p.name.startswith("aggregator"))


def stored_keys(data: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"{(data / 'aggregator.sqlite3').as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT topic, event_id FROM events").fetchall()
    finally:
        conn.close()


def test_disk_full_mid_load_is_503_then_recovers_without_traffic(tmp_path: Path) -> None:
    with (
        running_server(tmp_path, "--probe-seconds", "0.05") as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        acked: list[dict[str, Any]] = []
        for i in range(5):
            batch = [event("a", f"warm-{i}-{j}", payload=PAYLOAD) for j in range(50)]
            assert http.post("/publish", json=batch).status_code == 200
            acked += batch
        hard = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)[1]
        limit = file_sizes(tmp_path) + 512 * 1024
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (limit, hard))

        refused: list[list[dict[str, Any]]] = []
        for i in range(200):  # about 100 KB per batch: the limit is reached within a few
            batch = [event("b", f"{i}-{j}", payload=PAYLOAD) for j in range(50)]
            response = http.post("/publish", json=batch)
            if response.status_code == 200:
                acked += batch
                continue
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "1"
            assert response.json()["error"] == "unavailable"
            refused.append(batch)
            if len(refused) == 3:
                break
        assert len(refused) == 3, "the limit was never reached"

        health = http.get("/health")
        assert health.status_code == 503
        assert "full" in health.json()["reason"] or "I/O" in health.json()["reason"]
        keys = stored_keys(tmp_path)  # nothing partial: exactly the acknowledged events
        assert sorted(keys) == sorted((e["topic"], e["event_id"]) for e in acked)
        assert http.get("/stats").json()["unique_processed"] == len(acked)

        # Space returns; nobody publishes: the writer's probe brings health back.
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        wait_for(lambda: http.get("/health").status_code == 200, "/health to recover")
        assert "the store takes writes again" in server.log()

        for batch in refused:  # the clients resend what was refused: all of it is stored now
            response = http.post("/publish", json=batch)
            assert response.json() == {"accepted": 50, "stored": 50, "duplicates": 0}
            acked += batch
        stats = http.get("/stats").json()
    keys = stored_keys(tmp_path)
    assert len(keys) == len(set(keys)) == len(acked) == stats["unique_processed"]
    assert stats["received"] == stats["unique_processed"] + stats["duplicate_dropped"]


def corrupt_database(path: Path) -> None:
    """A real store whose pages after the header are overwritten: SQLite's header, broken body."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [("y" * 500,) for _ in range(100)])
    conn.commit()
    conn.close()
    raw = bytearray(path.read_bytes())
    raw[100:] = b"\xde\xad\xbe\xef" * ((len(raw) - 100) // 4)
    path.write_bytes(bytes(raw))


def foreign_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()


def foreign_database_at_user_version_1(path: Path) -> None:
    """Another program's database whose user_version happens to be one the aggregator used."""
    foreign_database(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 1")
    conn.close()


def other_application(path: Path) -> None:
    """Another program's database that names itself in the header, with our table names."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1179602516")
    conn.execute("PRAGMA user_version = 3")
    conn.execute("CREATE TABLE events (x)")
    conn.close()


CRASH_IN_WAL = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA wal_autocheckpoint = 0")
for statement in sys.argv[2:]:
    conn.execute(statement)
os._exit(0)  # as a crash: the WAL is left with its frames, never checkpointed
"""


def left_by_a_crash(*statements: str) -> Callable[[Path], object]:
    """A database whose last writes are still in a ``-wal`` file, as a crash leaves it."""

    def make(path: Path) -> None:
        subprocess.run([sys.executable, "-c", CRASH_IN_WAL, str(path), *statements], check=True)
        assert path.with_name(path.name + "-wal").stat().st_size > 0

    return make


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (corrupt_database, "cannot be opened as the aggregator's store"),
        (foreign_database, "another program"),
        (foreign_database_at_user_version_1, "another program"),
        (other_application, "another program"),
        (lambda p: p.write_bytes(b"\x00\x01garbage" * 1000), "cannot be opened"),
        (
            left_by_a_crash(
                "CREATE TABLE notes (body)", "INSERT INTO notes VALUES ('kept in the WAL')"
            ),
            "another program",
        ),
        (
            left_by_a_crash(
                "PRAGMA application_id = 1097287538",
                "PRAGMA user_version = 99",
                "CREATE TABLE t (x)",
            ),
            "newer than this aggregator's",
        ),
    ],
    ids=[
        "corrupt",
        "foreign",
        "foreign-at-version-1",
        "other-application",
        "garbage",
        "foreign-with-wal",
        "newer-with-wal",
    ],
)
def test_a_bad_store_at_start_up_exits_1_and_leaves_the_file_as_it_was(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / "aggregator.sqlite3"
    make(path)
    files = sorted(p.name for p in tmp_path.iterdir())
    contents = {name: (tmp_path / name).read_bytes() for name in files if not name.endswith("-shm")}
    result = subprocess.run(
        [sys.executable, "-m", "aggregator", "--port", "0", "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("aggregator: error: ")
    # Byte for byte: the file, and a WAL left beside it (neither checkpointed nor removed).
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    assert {name: (tmp_path / name).read_bytes() for name in contents} == contents
