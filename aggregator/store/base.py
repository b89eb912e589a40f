"""The store's narrow interface: commit batches and say what was new; read by cursor; counters.

Implementations are synchronous (no trio): the writer actor calls ``commit`` on its one thread,
readers call the read methods on worker threads, one connection each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from aggregator.messages import EventRecord, StoredEvent


class StoreUnavailable(Exception):
    """The store cannot take writes (or answer reads) now; nothing was changed. Retry later."""


class StoreContention(StoreUnavailable):
    """The transaction waited too long for a lock that only some of its requests needed (one
    key's or one topic's row, held by another session): each request may well succeed alone. A
    lock every transaction needs (a table's) is plain ``StoreUnavailable``."""


class StoreBroken(Exception):
    """The connection is unusable (e.g. a failed rollback): the writer must not go on with it."""


class StoreMismatch(Exception):
    """The database at start-up is not one this aggregator can use; it was left untouched."""


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What one transaction did: per request, (stored, duplicates). Readers see the rows."""

    counts: list[tuple[int, int]]

    @property
    def stored(self) -> int:
        return sum(stored for stored, _ in self.counts)


class Counters(NamedTuple):
    received: int
    unique_processed: int
    duplicate_dropped: int
    topics: list[str]


class TopicCounts(NamedTuple):
    topic: str
    stored: int
    duplicates: int
    last_seq: int


class WriteStore(Protocol):
    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        """Commit every batch in one transaction: all or nothing.

        Within and across batches the first copy of a ``(topic, event_id)`` wins. Raises
        ``StoreUnavailable`` after rolling back, ``StoreBroken`` if it cannot roll back.
        """
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
