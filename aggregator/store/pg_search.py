"""Search on the PostgreSQL store: the ``search`` tsvector column, its build, filtered reads.

The column holds each event's words at their positions (``search.py``), written by the same
INSERT as the event when search is on, so a committed event is found at once; retention
deletes it with the row. NULL means "not indexed": events stored while search was off, which
upkeep steps index once it is on (a partial index finds them), a chunk per transaction, so any
number of processes can share the work (``SKIP LOCKED``).
"""

from __future__ import annotations

from typing import Any

import psycopg

from aggregator.messages import StoredEvent
from aggregator.store.pg_schema import escape, unescape
from aggregator.store.query import EventQuery, SearchBuilding, SearchOff, time_filters
from aggregator.store.search import tsquery, tsvector_literal

EVENT_COLUMNS = "seq, topic, event_id, timestamp, source, payload, received_at"
VISIBLE = "xid < pg_snapshot_xmin(pg_current_snapshot())"  # as pg_reader.py
BUILD_CHUNK = 1_000
# A q with at most this many matches is answered from its GIN matches, sorted; with more (a
# common word) by walking seq order, where matches come soon. PostgreSQL's planner cannot tell
# the two apart (it guesses 0.5% of the rows for any word it has no statistics for) and walked
# 1M events in seq order for a word of 9 (2.4 s, bench/search.py).
CANDIDATES = 5_000
UNINDEXED = """SELECT topic, event_id, payload FROM events WHERE search IS NULL
    ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"""
SET_WORDS = """UPDATE events SET search = u.words::tsvector
    FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(topic, event_id, words)
    WHERE events.topic = u.topic AND events.event_id = u.event_id"""


def words_column(event_ids: list[str], payloads: list[str]) -> list[str]:
    """The tsvector literals of events about to be inserted (``event_ids`` not escaped)."""
    return [
        tsvector_literal(eid, payload) for eid, payload in zip(event_ids, payloads, strict=True)
    ]


def build_step(conn: psycopg.Connection[Any], max_events: int) -> bool:
    """Index up to ``max_events`` events stored while search was off, inside the caller's
    transaction; whether there may be more."""
    rows = conn.execute(UNINDEXED, (min(max_events, BUILD_CHUNK),)).fetchall()
    if rows:
        topics, event_ids, literals = [], [], []
        for topic, event_id, payload in rows:
            topics.append(topic)
            event_ids.append(event_id)
            literals.append(tsvector_literal(unescape(event_id), payload))
        conn.execute(SET_WORDS, (topics, event_ids, literals))
    return len(rows) == min(max_events, BUILD_CHUNK)


def check_ready(conn: psycopg.Connection[Any], enabled: bool) -> None:
    if not enabled:
        raise SearchOff("full-text search is off")
    row = conn.execute(f"SELECT count(*) FROM events WHERE search IS NULL AND {VISIBLE}").fetchone()
    if row is not None and row[0]:
        raise SearchBuilding(f"{row[0]} stored events are still to be indexed")


def find(conn: psycopg.Connection[Any], query: EventQuery) -> list[StoredEvent]:
    conditions, params = time_filters(
        query, '(timestamp COLLATE "C")', "%s", 'substr(timestamp, 1, 19) COLLATE "C"'
    )
    if query.topic is not None:
        if "\x00" in query.topic:
            return []  # no topic holds NUL (the contract forbids control characters)
        conditions.append("topic = %s")
        params.append(query.topic)
    if query.source is not None:
        conditions.append("source = %s")
        params.append(escape(query.source))
    if query.search is not None:
        conditions.append("search @@ %s::tsquery")
        params.append(tsquery(query.search))
        seqs = [
            seq
            for (seq,) in conn.execute(
                "SELECT seq FROM events WHERE search @@ %s::tsquery LIMIT %s",
                (tsquery(query.search), CANDIDATES + 1),
            )
        ]
        if len(seqs) <= CANDIDATES:  # few: look them up by seq
            conditions.append("seq = ANY(%s)")
            params.append(seqs)
    conditions.append("seq > %s")
    params.append(query.after)
    if query.before:
        conditions.append("seq < %s")
        params.append(query.before)
    order = "DESC" if query.descending else "ASC"
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(conditions)} AND {VISIBLE} "
        f"ORDER BY seq {order} LIMIT %s OFFSET %s",
        (*params, query.limit, query.offset),
    )
    return [
        StoredEvent(seq, topic, unescape(event_id), timestamp, unescape(source), *rest)
        for seq, topic, event_id, timestamp, source, *rest in rows
    ]
