"""The embedded store: SQLite in WAL mode, one write connection, read-only reader connections.

Synchronous code only: the writer actor runs ``SQLiteStore.commit`` on its one thread. The
readers are in ``sqlite_reader.py``, the schema and its migrations in ``sqlite_schema.py``, the
dedup index in ``sqlite_keys.py``, retention's steps in ``sqlite_retention.py``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from aggregator.messages import EventRecord
from aggregator.store import sqlite_keys, sqlite_retention, sqlite_search, sqlite_wal
from aggregator.store.base import (
    Clock,
    CommitResult,
    Retention,
    StoreBroken,
    StoreDamaged,
    StoreMismatch,
    StoreUnavailable,
    Upkeep,
    commit_result,
    utc_now,
    utc_text,
)
from aggregator.store.checkpointer import Checkpointer
from aggregator.store.lock import StoreLock
from aggregator.store.sqlite_reader import (
    SQLiteReader,
    damaged,
    describe,
    is_damage,
    reading,
    wal_path,
)
from aggregator.store.sqlite_schema import KeyHash, identify, key_hash, migrate

LOGGER = logging.getLogger(__name__)
__all__ = ["SQLiteReader", "SQLiteStore", "describe", "wal_path", "wal_restart_pages"]

INSERT_EVENT = """INSERT INTO events (seq, topic, event_id, timestamp, source, payload, received_at)
    VALUES (?, ?, ?, ?, ?, ?, ?)"""
ADD_COUNTERS = """UPDATE counters SET received = received + ?,
    unique_processed = unique_processed + ?, duplicate_dropped = duplicate_dropped + ?,
    last_seq = ?"""
ADD_TOPIC = """INSERT INTO topics (topic, stored, duplicates, last_seq) VALUES (?, ?, ?, ?)
    ON CONFLICT (topic) DO UPDATE SET stored = stored + excluded.stored,
    duplicates = duplicates + excluded.duplicates, last_seq = max(last_seq, excluded.last_seq)"""
# The checkpointer lets the WAL start over once it holds this many pages (~64 MiB at 4 KiB);
# with a size limit, an eighth of it, at least 256 pages (1 MiB): the most the WAL adds to it.
WAL_RESTART_PAGES = 16_384
MIN_WAL_RESTART_PAGES = 256


def wal_restart_pages(max_bytes: int) -> int:
    """The WAL's size, in pages, at which the checkpointer lets it start over."""
    if not max_bytes:
        return WAL_RESTART_PAGES
    return min(WAL_RESTART_PAGES, max(MIN_WAL_RESTART_PAGES, max_bytes // 8 // 4096))


# A reader's snapshot older than the WAL's end (the integrity check holds one for seconds on a
# large store) makes a RESTART checkpoint wait the whole busy timeout, and fail: the WAL bound
# waits this long for readers, and after a failure lets this much time pass before it tries again.
BOUND_WAIT_MS = 100
BOUND_RETRY_SECONDS = 1.0
BUSY_TIMEOUT_MS = 5000


# Recent keys kept in memory before buckets of them are merged into the keys table (~100 B each).
RECENT_KEYS = 256_000


def _identify(path: Path, *, check_wal: bool) -> int:
    if not path.stat().st_size:
        # SQLite deletes the WAL of an empty file when it opens it: a WAL that holds a database
        # (a truncated or half-restored file, another program's) would be lost without a word.
        wal = wal_path(path)
        if wal.exists() and wal.stat().st_size:
            raise StoreMismatch(
                f"{path} is empty but {wal} beside it holds {wal.stat().st_size} bytes of a "
                "database's log (a truncated or half-restored file?); move both aside, or "
                "delete the WAL too for a new store"
            )
        return 0  # a new, empty file (the lock created it)
    conn = None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        version = identify(conn, path)  # its reads recovered the WAL into the -shm
    except sqlite3.DatabaseError as exc:
        # Damage or not, a file whose schema cannot be read may be another program's: refused.
        raise StoreMismatch(
            f"{path} cannot be opened as the aggregator's store: {describe(exc)}"
        ) from exc
    finally:
        if conn is not None:
            conn.close()
    # Only a WAL synced at every commit tells acknowledged frames from a torn tail.
    dropped = sqlite_wal.dropped_commits(path) if check_wal else None
    if dropped is not None:
        frame, commits = dropped
        raise StoreDamaged(
            f"its WAL is damaged at frame {frame}: recovery would drop {commits} or more "
            "acknowledged transactions after it and mix older pages into the file",
            str(path),
        )
    return version


def _read_only(path: Path) -> StoreUnavailable:
    return StoreUnavailable(
        f"{path} is read-only: the server must write its store; make the file and its "
        "directory (and its file system) writable"
    )


def _check_writable(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a store SQLite opened read-only (a read-only file system or file): such a
    server answered ``/health`` 200 until its first publish got 503. Only a write tells: a
    read-only connection in WAL mode begins even an IMMEDIATE transaction. The write is rolled
    back (one page: it never leaves the cache)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            conn.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
            raise _read_only(path) from exc
        # Busy, or another error: the writer meets it and reports it.


class SQLiteStore:
    """The only write connection. Opening it checks the file, migrates it and sets WAL.

    ``clock`` gives ``received_at`` and the "now" of retention by age; ``hash_key`` the dedup
    index's hash (tests inject one that collides); ``recent_keys`` how many keys of new events
    are held in memory before they are merged into the index (``sqlite_keys.py``);
    ``wal_pages`` the WAL's size at which it starts over (``checkpointer.py``); ``free_space``
    the free bytes of the file system (tests inject a full disk); ``search`` whether commits
    keep the full-text index and upkeep builds it (``sqlite_search.py``)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "full",
        cache_mib: int = 256,
        clock: Clock = utc_now,
        hash_key: KeyHash = key_hash,
        recent_keys: int = RECENT_KEYS,
        wal_pages: int = WAL_RESTART_PAGES,
        free_space: Callable[[], int] | None = None,
        search: bool = False,
    ) -> None:
        self.path = path
        self._clock = clock
        self._hash = hash_key
        self._recent_limit = recent_keys
        self._next_bucket = 0
        self._wal = wal_path(path)
        self._wal_bound = 2 * wal_pages * 4096  # one checkpoint's worth, at the most
        self._bound_retry_at = 0.0  # time.monotonic() before which _bound_wal does not try
        self._free_space = free_space or (lambda: shutil.disk_usage(path.parent).free)
        self._search = search
        self._lock = StoreLock(path)  # before anything reads or writes the file
        try:
            # SQLite opens a file it cannot write read-only, without a word, and without its
            # -wal and -shm even a read fails: a server there would fail every publish.
            real = Path(os.path.realpath(path))
            if not (os.access(real, os.W_OK) and os.access(real.parent, os.W_OK)):
                raise _read_only(path)
            # Checked on a read-only connection, so a foreign, newer or corrupt file is left as
            # it was: closing a writable one would checkpoint a WAL left beside it.
            version = _identify(path, check_wal=synchronous.lower() == "full")
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except BaseException:
            self._lock.release()
            raise
        try:
            _check_writable(conn, path)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            conn.execute(f"PRAGMA cache_size = {-cache_mib * 1024}")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer's thread does it
            conn.execute(f"PRAGMA journal_size_limit = {wal_pages * 4096}")
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            migrate(conn, path, version)
            self._recent = sqlite_keys.load(conn, hash_key)
            self._search_upto = sqlite_search.upto(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            self._lock.release()
            if is_damage(exc):  # identified as ours above: damaged, not foreign
                raise damaged(exc, path) from exc
            raise StoreMismatch(
                f"{path} cannot be opened as the aggregator's store: {describe(exc)}"
            ) from exc
        except BaseException:
            conn.close()
            self._lock.release()
            raise
        self._conn = conn
        self._checkpointer = Checkpointer(path, synchronous=synchronous, restart_frames=wal_pages)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on an SQLite error (StoreUnavailable;
        StoreDamaged when the file is damaged)."""
        self._checkpointer.raise_damage()
        with self._checkpointer.pause:
            cur = self._conn.cursor()
            committing = False
            try:
                self._bound_wal(cur)
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                committing = True
                cur.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(exc)
                if is_damage(exc):
                    raise damaged(exc, self.path) from exc
                # An error at COMMIT (an I/O error while syncing) may come after the frames
                # reached the WAL: recovery may then bring the transaction back.
                raise StoreUnavailable(describe(exc), maybe_stored=committing) from exc
            except BaseException as exc:  # a bug, or a thread interrupted: never leave it open
                self._rollback(exc)
                raise
        self._checkpointer.notify()

    def _bound_wal(self, cur: sqlite3.Cursor) -> None:
        """If the checkpointer fell behind (starved of CPU, or readers held old snapshots) and
        the WAL grew past twice its restart size, checkpoint it here and let it start over: a
        size limit holds within one checkpoint's worth whatever the threads do — but a reader
        that holds a snapshot for seconds (the integrity check) holds the WAL too: then the
        transactions go on, waiting ``BOUND_WAIT_MS`` once per ``BOUND_RETRY_SECONDS`` at most,
        not the busy timeout each."""
        if time.monotonic() < self._bound_retry_at:
            return
        try:
            size = self._wal.stat().st_size
        except FileNotFoundError:
            return
        if size > self._wal_bound:
            cur.execute(f"PRAGMA busy_timeout = {BOUND_WAIT_MS}")
            try:
                busy, _, _ = cur.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            finally:
                cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if busy:
                self._bound_retry_at = time.monotonic() + BOUND_RETRY_SECONDS

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        received_at = utc_text(self._clock())
        # The first copy of each key in the transaction is its candidate (request order).
        first: dict[tuple[str, str], EventRecord] = {}
        for batch in batches:
            for record in batch:
                first.setdefault((record.topic, record.event_id), record)
        hashes = {key: self._hash(*key) for key in first}
        with self._transaction() as cur:
            for key in sqlite_keys.stored_keys(cur, self._recent, hashes.values()):
                first.pop(key, None)
            (seq,) = cur.execute("SELECT last_seq FROM counters").fetchone()
            # The index is kept by commits once it is complete; until then upkeep builds it.
            indexing = self._search and self._search_upto == seq
            rows, keys, flags = [], [], []
            topics: dict[str, list[int]] = {}  # topic -> [stored, duplicates, last seq]
            for batch in batches:
                request = []
                for record in batch:
                    tally = topics.get(record.topic) or topics.setdefault(record.topic, [0, 0, 0])
                    key = (record.topic, record.event_id)
                    if first.get(key) is record:
                        del first[key]  # later copies of the key are duplicates
                        seq += 1
                        rows.append((seq, *record, received_at))
                        keys.append((hashes[key], seq))
                        tally[0] += 1
                        tally[2] = seq
                        request.append(True)
                    else:
                        tally[1] += 1
                        request.append(False)
                flags.append(request)
            cur.executemany(INSERT_EVENT, rows)
            if indexing and rows:
                sqlite_search.index(cur, [(row[0], row[2], row[5]) for row in rows], seq)
            total = sum(len(batch) for batch in batches)
            cur.execute(ADD_COUNTERS, (total, len(rows), total - len(rows), seq))
            cur.executemany(ADD_TOPIC, [(t, *tally) for t, tally in topics.items()])
        for h, seq in keys:  # committed: now they are stored keys
            self._recent.add(h, seq)
        if indexing and rows:
            self._search_upto = rows[-1][0]
        return commit_result(flags)

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        """A retention step when one is due (first: it frees space), then the merge of one
        bucket of recent keys into the index when they are many, or when its keys of expired
        events are: each in a short transaction of its own."""
        with reading(self.path):  # its reads outside a transaction; damage is fatal here too
            return self._maintain(retention, max_events, reclaim=reclaim)

    def _maintain(self, retention: Retention, max_events: int, *, reclaim: bool) -> Upkeep:
        self._checkpointer.raise_damage()  # met on its thread: the writer's upkeep reports it
        expired, now = 0, self._clock()
        # With a size limit, the disk's free space is part of it: below a reserve of two
        # checkpoints' worth, the oldest events go as if the limit were reached.
        if retention.max_bytes and self._free_space() < 2 * self._wal_bound:
            reclaim = True
        # Keys of expired events stay in the key table until their bucket is swept. Counted
        # in the size, they made a limit far below the store's size delete nearly every
        # event (a 60,000-event store under a 1 MB limit kept 351 of the ~3,200 that fit): while
        # they hold more than a 16th of the limit, the oldest buckets are swept before more
        # events go. (Not "as much as": under a limit below 16 bytes a 16th is 0, which no keys
        # at all reached too, and upkeep swept nothing for ever instead of deleting.)
        sweep_first = (
            retention.max_bytes > 0
            and not reclaim
            and sqlite_keys.unswept_bytes(self._conn) > retention.max_bytes // 16
            and sqlite_retention.used_bytes(self._conn) > retention.max_bytes
        )
        by_age = replace(retention, max_bytes=0) if sweep_first else retention
        if sqlite_retention.due(self._conn, by_age, now, reclaim=reclaim):
            with self._transaction() as cur:
                expired = sqlite_retention.step(cur, by_age, now, max_events, reclaim=reclaim)
        # Every round, sweeping or not: the index build goes on while keys are swept.
        building = self._search and self._search_step(max_events)
        if sweep_first:
            self._merge(sqlite_keys.stalest_bucket(self._conn), sweep=True)
            return Upkeep(expired, more=True)
        bucket = self._next_bucket
        sweep = sqlite_keys.sweep_due(self._conn, bucket)
        merged = self._recent.size >= self._recent_limit or sweep
        if merged:
            self._merge(bucket, sweep=sweep)
            self._next_bucket = (bucket + 1) % len(self._recent.buckets)
        # More: events left to delete, keys now due for a sweep, or recent keys still many.
        return Upkeep(expired, more=merged or expired > 0 or building)

    def _search_step(self, max_events: int) -> bool:
        """Index a chunk of the events the full-text index does not reach yet; whether more
        are left."""
        (last_seq,) = self._conn.execute("SELECT last_seq FROM counters").fetchone()
        if self._search_upto >= last_seq:
            return False
        with self._transaction() as cur:
            reach = sqlite_search.build_step(cur, min(max_events, sqlite_search.BUILD_CHUNK))
        self._search_upto = reach
        return bool(reach < last_seq)

    def _merge(self, bucket: int, *, sweep: bool) -> None:
        rows = self._recent.entries(bucket)
        with self._transaction() as cur:
            sqlite_keys.merge(cur, bucket, rows, sweep=sweep)
        self._recent.clear(bucket)

    def _rollback(self, cause: BaseException) -> None:
        try:
            if self._conn.in_transaction:  # SQLite may have rolled back already (e.g. FULL)
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if isinstance(cause, sqlite3.Error) and is_damage(cause):
                raise damaged(cause, self.path) from exc
            if is_damage(exc):
                raise damaged(exc, self.path) from exc
            reason = describe(cause) if isinstance(cause, sqlite3.Error) else repr(cause)
            raise StoreBroken(f"rollback after {reason} failed: {describe(exc)}") from exc

    def probe(self, reserve_bytes: int) -> None:
        """Commit a ``reserve_bytes`` blob, then delete it: both must reach the disk.

        A commit of one small row can fit into space the WAL file already has while a real
        transaction still cannot; writing the size of the one that failed tells them apart.
        The freed pages stay in the file for the next events.
        """
        with self._transaction() as cur:
            cur.execute("INSERT INTO probe (filler) VALUES (zeroblob(?))", (reserve_bytes,))
        with self._transaction() as cur:
            cur.execute("DELETE FROM probe")

    def execute(self, sql: str) -> None:
        """Run one statement on the write connection (pragmas; used by tests to inject faults)."""
        self._conn.execute(sql)

    def close(self) -> None:
        """Merge the recent keys (so the next start-up has none to read back), close."""
        try:
            for bucket, recent in enumerate(self._recent.buckets):
                if recent:
                    self._merge(bucket, sweep=False)
        except StoreUnavailable as exc:  # read back from the events at the next start-up
            LOGGER.warning("recent keys not merged at close: %s", exc)
        finally:
            self._checkpointer.close()
            self._conn.close()  # the last connection: SQLite checkpoints the WAL, removes it
            self._lock.release()
