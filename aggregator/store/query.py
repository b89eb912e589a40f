"""What ``GET /events`` asks a store for: filters, direction, cursors; and the shared SQL pieces.

Times are compared as the stored text, ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``, which sorts as it reads
only per whole second: ``…:00.5Z`` sorts before ``…:00Z`` ('.' < 'Z'). So a bound is a range on
the text that an index can use, by whole seconds, plus an exact test of the bound's own second.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from aggregator.messages import StoredEvent
from aggregator.store.search import Query, event_words, matches


class SearchOff(Exception):
    """``q`` was asked for but the full-text index is off (AGGREGATOR_SEARCH)."""


class SearchBuilding(Exception):
    """The full-text index is being built for events stored before it was turned on."""


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A page of stored events. ``since`` inclusive and ``until`` exclusive, on ``timestamp``,
    as ``YYYY-MM-DDTHH:MM:SS.ffffff`` (UTC, always six digits); ``after`` < seq < ``before``
    (``before`` 0: no upper bound); ``descending``: newest first."""

    topic: str | None = None
    source: str | None = None
    since: str | None = None
    until: str | None = None
    search: Query | None = None
    after: int = 0
    before: int = 0
    descending: bool = False
    limit: int = 100
    offset: int = 0

    @property
    def filtered(self) -> bool:
        """Whether anything beyond a topic narrows the events (a live stream's own test)."""
        return bool(self.source is not None or self.since or self.until or self.search)

    def page_after(self, cursor: int, limit: int) -> EventQuery:
        return replace(self, after=cursor, limit=limit, before=0, descending=False, offset=0)

    def admits(self, event: StoredEvent, words: Callable[[], Sequence[str]] | None = None) -> bool:
        """Whether a committed event passes the filters (``topic``, ``source``, the times,
        ``q``), tested in Python: the live side of ``/subscribe``, as the stores' SQL would.
        ``words``: the event's words (``event_words``), split once for every stream."""
        if self.topic is not None and event.topic != self.topic:
            return False
        if self.source is not None and event.source != self.source:
            return False
        if self.since is not None or self.until is not None:
            stamp = (
                event.timestamp[:-1] if "." in event.timestamp else event.timestamp[:-1] + ".000000"
            )
            if (self.since is not None and stamp < self.since) or (
                self.until is not None and stamp >= self.until
            ):
                return False
        if self.search is None:
            return True
        found = words() if words is not None else event_words(event.event_id, event.payload)
        return matches(self.search, found)


# The stored timestamp's fraction, ".000000" when it has none: comparable as text.
FRACTION = "(CASE WHEN length({col}) = 20 THEN '.000000' ELSE substr({col}, 20, 7) END)"


def time_filters(
    query: EventQuery, column: str, placeholder: str, second: str
) -> tuple[list[str], list[object]]:
    """SQL conditions (and their parameters) for ``since``/``until`` on ``column``; ``second``
    is the SQL of the column's first 19 characters (its whole second)."""
    conditions: list[str] = []
    params: list[object] = []
    fraction = FRACTION.format(col=column)
    p = placeholder
    if query.since is not None:
        whole, frac = query.since[:19], query.since[19:]
        # All of the bound's second and later (the range), then the exact test in that second.
        conditions.append(f"{column} >= {p} AND ({second} > {p} OR {fraction} >= {p})")
        params += [whole, whole, frac]
    if query.until is not None:
        whole, frac = query.until[:19], query.until[19:]
        conditions.append(f"{column} < {p} AND ({second} < {p} OR {fraction} < {p})")
        params += [whole + "[", whole, frac]  # '[' sorts after 'Z' and '.': the whole second
    return conditions, params
