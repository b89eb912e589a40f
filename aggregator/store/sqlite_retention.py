"""Retention on the SQLite store: delete the oldest events, a small step at a time.

Events are always deleted from the front, in seq order, so the stored events are exactly the
seqs from the first stored one to ``counters.last_seq``: cursors stay valid (a cursor below the
first stored seq starts at it) and a key row whose seq is below the first stored seq belongs to
an expired event. Such a row never matches (the dedup lookup confirms against the events), and
deleting it at once would cost a random index page per event, as much as inserting it; the
merge of its bucket deletes it later with its neighbours (``sqlite_keys.merge``).

An expired event's key is forgotten with it: the same ``(topic, event_id)`` published again is
stored again, under a new seq (``docs/retention.md``).
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from datetime import datetime, timedelta

from aggregator.store import sqlite_search
from aggregator.store.base import Retention, utc_text

OLDEST = "SELECT seq, topic, received_at FROM events ORDER BY seq LIMIT ?"


def used_bytes(conn: sqlite3.Connection | sqlite3.Cursor) -> int:
    """Pages in use (the file less its free pages): what a size limit counts. Deleting frees
    pages inside the file for the next events; the file itself does not shrink."""
    pages: int = conn.execute("PRAGMA page_count").fetchone()[0]
    free: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size: int = conn.execute("PRAGMA page_size").fetchone()[0]
    return (pages - free) * size


def _cutoff(retention: Retention, now: datetime) -> str:
    return utc_text(now - timedelta(seconds=retention.max_age_seconds))


def due(conn: sqlite3.Connection, retention: Retention, now: datetime, *, reclaim: bool) -> bool:
    """Whether a step would delete anything: cheap reads, no write transaction."""
    if retention.max_bytes and (reclaim or used_bytes(conn) > retention.max_bytes):
        return conn.execute(OLDEST, (1,)).fetchone() is not None
    if retention.max_age_seconds:
        oldest = conn.execute(OLDEST, (1,)).fetchone()
        return oldest is not None and oldest[2] < _cutoff(retention, now)
    return False


def _count(
    cur: sqlite3.Cursor, rows: list[tuple[int, str, str]], retention: Retention, now: datetime,
    reclaim: bool,
) -> int:  # fmt: skip
    """How many of the oldest ``rows`` are past the retention."""
    count = 0
    if retention.max_age_seconds:
        cutoff = _cutoff(retention, now)
        while count < len(rows) and rows[count][2] < cutoff:
            count += 1
    if retention.max_bytes:
        if reclaim:
            return len(rows)
        used = used_bytes(cur)
        if used > retention.max_bytes:
            unique, expired = cur.execute(
                "SELECT unique_processed, expired FROM counters"
            ).fetchone()
            per_event = used / max(unique - expired, 1)
            count = max(count, min(len(rows), math.ceil((used - retention.max_bytes) / per_event)))
    return count


def step(
    cur: sqlite3.Cursor, retention: Retention, now: datetime, max_events: int, *, reclaim: bool
) -> int:
    """Delete up to ``max_events`` of the oldest events past the retention, inside the caller's
    write transaction; how many."""
    rows = cur.execute(OLDEST, (max_events,)).fetchall()
    count = _count(cur, rows, retention, now, reclaim)
    if count:
        cur.execute("DELETE FROM events WHERE seq <= ?", (rows[count - 1][0],))
        sqlite_search.expire(cur, rows[count - 1][0])
        cur.execute("UPDATE counters SET expired = expired + ?", (count,))
        cur.executemany(
            "UPDATE topics SET expired = expired + ? WHERE topic = ?",
            [(n, topic) for topic, n in Counter(row[1] for row in rows[:count]).items()],
        )
    return count
