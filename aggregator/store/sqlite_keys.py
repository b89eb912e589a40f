"""The dedup index: which keys are stored, found by a 64-bit hash and confirmed by the row.

Two parts. ``keys`` is a table of ``(hash, seq)``; the keys of the newest events are instead in
``RecentKeys``, in memory, split into ``BUCKETS`` buckets by the top bits of the hash, and a
bucket is merged into the table in one small transaction once the recent keys are many. A commit
then only appends (events and the topic index) however large the store is: a random key written
into the table on every commit would dirty one page of it per event, which at millions of keys
is a 4 KiB page written to the WAL and again by the checkpoint per event (measured: ingest fell
to a third). A merged bucket is sorted and covers 1/64 of the table, so its keys share pages.

Nothing is lost in a crash: the events table is the log. ``merged.upto`` says, per bucket, up to
which seq its keys are in the table; on open, the events above are read back into memory.

A hash only finds candidates. An event is a duplicate when a candidate's stored row has the same
topic and event_id; rows of expired events are gone, so their keys never match.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from aggregator.store.sqlite_schema import BUCKETS, KeyHash

SHIFT = 64 - (BUCKETS - 1).bit_length()  # the top bits of the hash pick the bucket
# Stored rows among the candidates: seqs of recent keys, and hashes in the table.
FIND = """SELECT topic, event_id FROM events WHERE seq IN (SELECT value FROM json_each(?))
    UNION ALL
    SELECT e.topic, e.event_id FROM keys AS k JOIN events AS e ON e.seq = k.seq
    WHERE k.h IN (SELECT value FROM json_each(?))"""


def bucket_of(h: int) -> int:
    return (h >> SHIFT) & (BUCKETS - 1)


def bucket_range(bucket: int) -> tuple[int, int]:
    """The hashes of a bucket, inclusive (signed 64-bit)."""
    low = ((bucket ^ (BUCKETS >> 1)) << SHIFT) - 2**63
    return low, low + (1 << SHIFT) - 1


class RecentKeys:
    """Hash → seq of events not merged yet, per bucket; ``extra`` holds the further seqs of a
    hash that several stored keys share (a collision, or a key stored again after it expired)."""

    def __init__(self) -> None:
        self.buckets: list[dict[int, int]] = [{} for _ in range(BUCKETS)]
        self.extra: dict[int, list[int]] = {}
        self.size = 0

    def add(self, h: int, seq: int) -> None:
        bucket = self.buckets[(h >> SHIFT) & (BUCKETS - 1)]
        if h in bucket:
            self.extra.setdefault(h, []).append(seq)
        else:
            bucket[h] = seq
        self.size += 1

    def seqs(self, hashes: Iterable[int]) -> list[int]:
        """The seqs stored under any of ``hashes``: candidates to confirm."""
        buckets, found = self.buckets, []
        for h in hashes:
            seq = buckets[(h >> SHIFT) & (BUCKETS - 1)].get(h)
            if seq is not None:
                found.append(seq)
                if self.extra and h in self.extra:
                    found += self.extra[h]
        return found

    def entries(self, bucket: int) -> list[tuple[int, int]]:
        """Bucket ``bucket`` as sorted ``(hash, seq)`` rows."""
        rows = sorted(self.buckets[bucket].items())
        more = [(h, s) for h, seqs in self.extra.items() if bucket_of(h) == bucket for s in seqs]
        return sorted(rows + more) if more else rows

    def clear(self, bucket: int) -> int:
        """Forget bucket ``bucket`` (merged); how many rows it held."""
        count = len(self.buckets[bucket])
        self.buckets[bucket] = {}
        for h in [h for h in self.extra if bucket_of(h) == bucket]:
            count += len(self.extra.pop(h))
        self.size -= count
        return count


def stored_keys(
    cur: sqlite3.Cursor, recent: RecentKeys, hashes: Iterable[int]
) -> set[tuple[str, str]]:
    """Which of the keys with these hashes are stored: ``(topic, event_id)`` of the rows."""
    wanted = list(hashes)
    rows = cur.execute(FIND, (json.dumps(recent.seqs(wanted)), json.dumps(wanted)))
    return set(rows.fetchall())


def load(conn: sqlite3.Connection, key_hash: KeyHash) -> RecentKeys:
    """The recent keys of a store just opened: events above their bucket's ``merged.upto``."""
    upto = dict(conn.execute("SELECT bucket, upto FROM merged").fetchall())
    recent = RecentKeys()
    rows = conn.execute(
        "SELECT seq, topic, event_id FROM events WHERE seq > ? ORDER BY seq",
        (min(upto.values(), default=0),),
    )
    for seq, topic, event_id in rows:
        h = key_hash(topic, event_id)
        if seq > upto.get(bucket_of(h), 0):
            recent.add(h, seq)
    return recent


def merge(cur: sqlite3.Cursor, bucket: int, rows: list[tuple[int, int]], *, sweep: bool) -> None:
    """Write ``rows``, bucket ``bucket`` of the recent keys, into the table, inside the caller's
    transaction; with ``sweep``, also delete the bucket's rows of expired events. Clear the
    bucket in memory only once the transaction has committed."""
    expired, last_seq = cur.execute("SELECT expired, last_seq FROM counters").fetchone()
    first = cur.execute("SELECT seq FROM events ORDER BY seq LIMIT 1").fetchone()
    first_stored = first[0] if first else last_seq + 1
    cur.executemany(
        "INSERT OR IGNORE INTO keys (h, seq) VALUES (?, ?)",
        [row for row in rows if row[1] >= first_stored],  # not the keys of expired events
    )
    if sweep:
        low, high = bucket_range(bucket)
        cur.execute(
            "DELETE FROM keys WHERE h BETWEEN ? AND ? AND seq < ?", (low, high, first_stored)
        )
        cur.execute("UPDATE merged SET swept = ? WHERE bucket = ?", (expired, bucket))
    cur.execute("UPDATE merged SET upto = ? WHERE bucket = ?", (last_seq, bucket))


def sweep_due(cur: sqlite3.Cursor | sqlite3.Connection, bucket: int) -> bool:
    """Whether the expired keys in ``bucket`` may be half as many as the stored ones."""
    unique, expired, swept = cur.execute(
        "SELECT unique_processed, expired, swept FROM counters, merged WHERE bucket = ?",
        (bucket,),
    ).fetchone()
    return bool(expired - swept >= max((unique - expired) // 2, 1))


# A key row's share of the table's pages, at the least (18.8 bytes measured on a store of 20,000
# prefilled events): what an expired event's key still holds until its bucket is swept.
KEY_ROW_BYTES = 16


def unswept_bytes(cur: sqlite3.Cursor | sqlite3.Connection) -> int:
    """About how many bytes keys of expired events hold: per bucket, a 64th of the events
    expired since its last sweep (the keys spread evenly over the buckets)."""
    (count,) = cur.execute(
        "SELECT coalesce(sum(c.expired - m.swept), 0) FROM counters AS c, merged AS m"
    ).fetchone()
    return int(count) // BUCKETS * KEY_ROW_BYTES


def stalest_bucket(cur: sqlite3.Cursor | sqlite3.Connection) -> int:
    """The bucket swept longest ago: it holds the most keys of expired events."""
    (bucket,) = cur.execute("SELECT bucket FROM merged ORDER BY swept LIMIT 1").fetchone()
    return int(bucket)
