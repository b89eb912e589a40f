"""Search on the SQLite store: the full-text index's writes, its build, and filtered reads.

The FTS5 table ``events_fts`` (rowid = seq) holds each event's words (``search.py``). With
search on, a commit inserts its events' words in the same transaction as the events, so a
committed event is found at once and a crash leaves both or neither; retention deletes the same
seq range from both. ``search.upto`` says how far the index reaches: a commit indexes only when
the index is complete (``upto`` = the last seq), and otherwise upkeep steps (``build_step``)
index the older events first, in seq order, a bounded chunk per transaction, so turning search
on for a large store never blocks publishes for long.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from aggregator.messages import StoredEvent
from aggregator.store.query import EventQuery, SearchBuilding, SearchOff, time_filters
from aggregator.store.search import fts5_match, fts_text

EVENT_COLUMNS = "e.seq, e.topic, e.event_id, e.timestamp, e.source, e.payload, e.received_at"
INSERT_WORDS = "INSERT INTO events_fts (rowid, words) VALUES (?, ?)"
BUILD_CHUNK = 1_000  # events indexed per upkeep step: ~20 ms of a writer's time, measured


def upto(cur: sqlite3.Cursor | sqlite3.Connection) -> int:
    (value,) = cur.execute("SELECT upto FROM search").fetchone()
    return int(value)


def index(cur: sqlite3.Cursor, rows: Sequence[tuple[int, str, str]], last_seq: int) -> None:
    """Index ``(seq, event_id, payload)`` rows, inside the caller's transaction; the index then
    reaches ``last_seq``."""
    cur.executemany(INSERT_WORDS, [(seq, fts_text(eid, payload)) for seq, eid, payload in rows])
    cur.execute("UPDATE search SET upto = ?", (last_seq,))


def build_step(cur: sqlite3.Cursor, max_events: int) -> int:
    """Index the next ``max_events`` events the index does not reach yet; its new ``upto``."""
    start = upto(cur)
    (last_seq,) = cur.execute("SELECT last_seq FROM counters").fetchone()
    rows = cur.execute(
        "SELECT seq, event_id, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
        (start, max_events),
    ).fetchall()
    reach = rows[-1][0] if len(rows) == max_events else last_seq
    index(cur, rows, reach)
    return int(reach)


def expire(cur: sqlite3.Cursor, last_deleted: int) -> None:
    """Retention deleted the events up to ``last_deleted``: their words go too."""
    cur.execute("DELETE FROM events_fts WHERE rowid <= ?", (last_deleted,))


def check_ready(conn: sqlite3.Connection, enabled: bool) -> None:
    """Refuse a full-text query the index cannot answer completely (inside a read transaction)."""
    if not enabled:
        raise SearchOff("full-text search is off")
    reach = upto(conn)
    (last_seq,) = conn.execute("SELECT last_seq FROM counters").fetchone()
    if reach < last_seq:
        (left,) = conn.execute("SELECT count(*) FROM events WHERE seq > ?", (reach,)).fetchone()
        if left:
            raise SearchBuilding(f"{left} stored events are still to be indexed")


def find(conn: sqlite3.Connection, query: EventQuery) -> list[StoredEvent]:
    """A page of events matching every filter of ``query``, in seq order either way."""
    conditions, params = time_filters(query, "e.timestamp", "?", "substr(e.timestamp, 1, 19)")
    seq = "f.rowid" if query.search is not None else "e.seq"
    if query.topic is not None:
        conditions.append("e.topic = ?")
        params.append(query.topic)
    if query.source is not None:
        conditions.append("e.source = ?")
        params.append(query.source)
    conditions.append(f"{seq} > ?")
    params.append(query.after)
    if query.before:
        conditions.append(f"{seq} < ?")
        params.append(query.before)
    if query.search is not None:
        # The FTS table drives, in rowid order (FTS5 reads its rowids in either direction), and
        # each match is looked up by primary key; CROSS JOIN keeps that order of the loops.
        source = "events_fts AS f CROSS JOIN events AS e ON e.seq = f.rowid"
        conditions.insert(0, "events_fts MATCH ?")
        params.insert(0, fts5_match(query.search))
    elif query.since is not None or query.until is not None:
        # A time range reads that range from its index (the topic, if any, is tested on each
        # row: one index fewer on every commit) and sorts it. Left to choose, with ANALYZE's
        # statistics (which do not describe the times) SQLite walks the topic in seq order
        # instead, through every event older than ``since``: at 10M, a full scan.
        source = "events AS e INDEXED BY events_by_time"
    else:
        source = "events AS e"
    order = "DESC" if query.descending else "ASC"
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM {source} WHERE {' AND '.join(conditions)} "
        f"ORDER BY {seq} {order} LIMIT ? OFFSET ?"
    )
    rows = conn.execute(sql, (*params, query.limit, query.offset))
    return [StoredEvent(*row) for row in rows]
