"""The store's narrow interface: commit batches and say what was new; read by cursor; counters.

Implementations are synchronous (no trio): the writer actor calls ``commit`` on its one thread,
readers call the read methods on worker threads, one connection each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple, Protocol, TypeAlias

from aggregator.messages import EventRecord, StoredEvent
from aggregator.store.query import EventQuery

Clock: TypeAlias = Callable[[], datetime]  # the wall clock: received_at, retention by age


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_text(moment: datetime) -> str:
    """The stored form of a time: ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (sorts as it reads)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class StoreUnavailable(Exception):
    """The store cannot take writes (or answer reads) now. Retry later. ``maybe_stored``: the
    failure came at COMMIT itself, so the transaction may be in the log and come back at
    recovery; otherwise nothing was changed."""

    def __init__(self, message: str, *, maybe_stored: bool = False) -> None:
        super().__init__(message)
        self.maybe_stored = maybe_stored


class StoreContention(StoreUnavailable):
    """The transaction waited too long for a lock that only some of its requests needed (one
    key's or one topic's row, held by another session): each request may well succeed alone. A
    lock every transaction needs (a table's) is plain ``StoreUnavailable``."""


class StoreBroken(Exception):
    """The connection is unusable (e.g. a failed rollback): the writer must not go on with it."""


class StoreDamaged(StoreBroken):
    """The store's file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB, or a failed integrity check):
    fatal. No retry can help and a restart meets it again; the message says what to do."""

    def __init__(self, detail: str, where: str) -> None:
        super().__init__(
            f"the store is damaged ({detail}) at {where}: restore it from a backup, or recover "
            f"what it holds with `sqlite3 {where} .recover` (docs/reliability.md, "
            '"A damaged store")'
        )
        self.detail = detail
        self.where = where


class StoreMismatch(Exception):
    """The database at start-up is not one this aggregator can use; it was left untouched."""


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What one transaction did: per request, (stored, duplicates), and per request and event
    whether that event was stored (True) or a duplicate (False), as the statements decided."""

    counts: list[tuple[int, int]]
    stored_flags: list[list[bool]]

    @property
    def stored(self) -> int:
        return sum(stored for stored, _ in self.counts)


def commit_result(stored_flags: list[list[bool]]) -> CommitResult:
    counts = [(sum(flags), len(flags) - sum(flags)) for flags in stored_flags]
    return CommitResult(counts, stored_flags)


@dataclass(frozen=True, slots=True)
class Retention:
    """When stored events are deleted, oldest first; 0 turns a limit off (the default: never)."""

    max_age_seconds: float = 0.0  # by received_at
    max_bytes: int = 0  # the store's size

    @property
    def active(self) -> bool:
        return self.max_age_seconds > 0 or self.max_bytes > 0


@dataclass(frozen=True, slots=True)
class Upkeep:
    """What one ``maintain`` step did."""

    expired: int  # events deleted by retention
    more: bool  # another step has work to do now


class Counters(NamedTuple):
    received: int
    unique_processed: int
    duplicate_dropped: int
    topics: list[str]  # topics with at least one event stored now
    expired: int = 0  # events deleted by retention, in all


class TopicCounts(NamedTuple):
    topic: str
    stored: int  # events of the topic ever stored (unique_processed)
    duplicates: int
    last_seq: int
    expired: int = 0  # of them, deleted by retention


class WriteStore(Protocol):
    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        """Commit every batch in one transaction: all or nothing.

        Within and across batches the first copy of a ``(topic, event_id)`` wins. Raises
        ``StoreUnavailable`` after rolling back, ``StoreBroken`` if it cannot roll back.
        """
        ...

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        """One small step of upkeep, run by the writer between commits: index work the store
        deferred, or retention, deleting at most ``max_events`` of the oldest events past
        ``retention`` (with ``reclaim``, that many oldest events anyway, when a size limit is
        set and the disk filled up below it). Raises like ``commit``."""
        ...

    def probe(self, reserve_bytes: int) -> None:
        """Commit about ``reserve_bytes`` of new data, then free it again: after a failure, the
        writer's test that a transaction of that size fits now.

        Raises ``StoreUnavailable`` when it does not fit (disk full, read-only, broken).
        """
        ...

    def close(self) -> None: ...


class ReadStore(Protocol):
    def events(
        self, topic: str | None, after: int, limit: int, offset: int
    ) -> list[StoredEvent]: ...

    def find(self, query: EventQuery) -> list[StoredEvent]:
        """A page of events by every filter of ``query``. Raises ``SearchOff`` or
        ``SearchBuilding`` (``query.py``) for a full-text query the index cannot answer."""
        ...

    def counters(self) -> Counters: ...

    def topics(self) -> list[TopicCounts]: ...

    def ping(self) -> None: ...

    def head(self) -> int:
        """The largest seq ``events`` can return now (0 when none): where a live tail starts."""
        ...

    def size_bytes(self) -> int:
        """Disk space the store takes, for the metrics."""
        ...

    def close(self) -> None: ...
