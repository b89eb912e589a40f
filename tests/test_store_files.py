"""The SQLite store's file as the system presents it: behind a symlink, on a read-only file
system, empty beside a WAL. Each was met on a real server process (an attack on the storage
layer, issue 19 items 15–17): the WAL looked for beside the link, a read-only store served as
healthy until its first publish, a database's WAL deleted without a word."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from aggregator.messages import EventRecord
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from tests.support import ROOT, ServerProcess, event, running_server
from tests.wal import current_frames

pytestmark = pytest.mark.sqlite_only


def start(data: Path) -> subprocess.CompletedProcess[str]:
    """A server that must refuse to start: its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--port", "0", "--data-dir", str(data)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_symlinked_store_counts_its_wal_where_sqlite_keeps_it(tmp_path: Path) -> None:
    """SQLite resolves the link and keeps the WAL beside the real file; the server looked for
    it beside the link, so ``aggregator_database_size_bytes`` left it out."""
    elsewhere = tmp_path / "disk2"
    elsewhere.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "aggregator.sqlite3").symlink_to(elsewhere / "store.sqlite3")
    with running_server(data) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        events = [event("t", f"e{i}", payload={"text": "x" * 1000}) for i in range(500)]
        assert http.post("/publish", json=events).status_code == 200
        wal = elsewhere / "store.sqlite3-wal"
        # Sizes first: a checkpoint after them grows the file (never shrinks it) and leaves the
        # WAL file as large (it is reused, not truncated, below its size limit).
        before = (elsewhere / "store.sqlite3").stat().st_size, wal.stat().st_size
        size = metric(http.get("/metrics").text, "aggregator_database_size_bytes")
        assert before[1] > 0  # the events are in the WAL until it starts over
        assert not (data / "aggregator.sqlite3-wal").exists()
        assert size >= before[0] + 0.9 * before[1]  # the WAL is counted


def test_the_wal_bound_holds_for_a_symlinked_store(tmp_path: Path) -> None:
    """With the checkpointer starved (here: stopped), the writer bounds the WAL itself at twice
    its restart size; behind a symlink it never saw the WAL and let it grow."""
    real = tmp_path / "real.sqlite3"
    link = tmp_path / "aggregator.sqlite3"
    link.symlink_to(real)
    store = SQLiteStore(link, wal_pages=256)  # restarts at 1 MiB, bounded at 2 MiB
    store._checkpointer.close()  # a checkpointer that never gets to run
    try:
        for i in range(60):  # ~100 KB a transaction: 6 MB in all
            records = [
                EventRecord("t", f"{i}-{j}", "2026-11-21T10:00:00.000000Z", "s", "x" * 1000)
                for j in range(100)
            ]
            store.commit([records])
        wal = tmp_path / "real.sqlite3-wal"
        assert wal.stat().st_size <= 2 * 256 * 4096 + 200 * 4096  # the bound and one transaction
        reader = SQLiteReader(link)
        try:
            assert reader.size_bytes() == real.stat().st_size + wal.stat().st_size
        finally:
            reader.close()
    finally:
        store._conn.close()
        store._lock.release()


CRASH_IN_WAL = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA wal_autocheckpoint = 0")
conn.execute("CREATE TABLE notes (body)")
conn.execute("INSERT INTO notes VALUES ('kept only in the WAL')")
os._exit(0)  # as a crash: the WAL keeps its frames
"""


def test_an_empty_file_beside_a_wal_is_refused_and_the_wal_kept(tmp_path: Path) -> None:
    """SQLite deletes the WAL of an empty database file when it opens it. The server took an
    empty file as a new store, so a database that lived in its WAL (a truncated or
    half-restored file, another program's) was deleted and replaced by an empty store."""
    path = tmp_path / "aggregator.sqlite3"
    subprocess.run([sys.executable, "-c", CRASH_IN_WAL, str(path)], check=True)
    path.write_bytes(b"")  # the file truncated; its WAL still holds the database
    wal = tmp_path / "aggregator.sqlite3-wal"
    before = wal.read_bytes()
    assert before
    result = start(tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"aggregator: error: {path} is empty but {wal} beside it")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert path.read_bytes() == b"" and wal.read_bytes() == before
    wal.unlink()  # as the message says: for a new store, the WAL goes too
    with running_server(tmp_path) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/stats").json()["received"] == 0


@contextmanager
def read_only(data: Path) -> Iterator[None]:
    """``data`` made read-only as a system would: a read-only mount (as root, who ignores file
    modes), or the file and directory modes otherwise."""
    if os.geteuid() != 0:
        for p in (*data.iterdir(), data):
            p.chmod(p.stat().st_mode & 0o555)
        yield
        return
    mount = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(data), str(data)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        pytest.skip(f"a read-only bind mount failed as root: {mount.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(data)], check=True)


def test_a_read_only_store_is_refused_at_start_up(tmp_path: Path) -> None:
    """It started, answered /health and /readyz 200, and only its first publish got 503
    (``attempt to write a readonly database``), while the checkpointer warned every second."""
    data = tmp_path / "data"
    with running_server(data) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/publish", json=event("t", "before")).status_code == 200
        server.kill()  # as a crash: the WAL stays, to be read on the read-only file system
    files = {p.name: p.read_bytes() for p in data.iterdir()}
    with read_only(data):
        result = start(data)
        assert result.returncode == 1, result.stderr
        path = data / "aggregator.sqlite3"
        assert result.stderr.startswith(f"aggregator: error: {path} is read-only: ")
        assert "make the file and its directory (and its file system) writable" in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.name in files} == files
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT event_id FROM events").fetchall() == [("before",)]


def test_a_damaged_frame_in_the_wal_is_not_recovered_around(tmp_path: Path) -> None:
    """Recovery stops at the first WAL frame whose checksum fails and takes the rest for a torn
    tail: one flipped byte dropped the acknowledged transactions after it, and the frames before
    it (older versions of pages already checkpointed) were mixed into the file. Seen: /stats
    950 and 993 rows after 1,000 events acknowledged, quick_check "ok", the server healthy."""
    data = tmp_path / "data"
    path = data / "aggregator.sqlite3"
    server = ServerProcess(["--port", "0", "--data-dir", str(data)])
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/publish", json=event("t", "first")).status_code == 200
            # A reader's snapshot keeps the WAL from starting over: the commits below stay in it.
            snapshot = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
            snapshot.execute("BEGIN")
            snapshot.execute("SELECT count(*) FROM events").fetchone()
            for i in range(20):
                events = [event("t", f"{i}-{j}", payload={"x": "y" * 200}) for j in range(50)]
                assert http.post("/publish", json=events).status_code == 200
        server.kill()  # SIGKILL: the WAL stays as the crash left it
        snapshot.close()
    finally:
        server.kill()
    wal = data / "aggregator.sqlite3-wal"
    frames = current_frames(wal.read_bytes())
    commits = [i for i, (_, commit) in enumerate(frames) if commit]
    assert len(commits) >= 10, commits
    damaged = bytearray(wal.read_bytes())
    damaged[frames[commits[4] + 1][0] + 24 + 100] ^= 0xFF  # in the page after the 5th commit
    wal.write_bytes(damaged)
    (data / "aggregator.sqlite3-shm").unlink()  # rebuilt from the WAL at start-up anyway
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    result = start(data)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.startswith("aggregator: error: the store is damaged (its WAL is damaged")
    assert "acknowledged transactions after it" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.name in before} == before
