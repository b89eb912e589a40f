"""``GET /events``: its query parameters read into an ``EventQuery``, its page and ``Link``.

Routes only: the filters' SQL is the stores' (``sqlite_search.py``, ``pg_search.py``), the ``q``
syntax ``aggregator/store/search.py``. Every bad parameter is a 422 that names it and its rule;
``q`` without the full-text index is a 400 that says how to turn it on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlencode

from aggregator.actors.readers import ReaderPool
from aggregator.messages import Detail, Rejection
from aggregator.store.query import EventQuery, SearchBuilding, SearchOff
from aggregator.store.search import QuerySyntaxError, parse

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_CURSOR = 2**63 - 1  # SQLite's INTEGER
RETRY_AFTER_SECONDS = 1
CURSOR_RULE = "must be a seq cursor, an integer of at least 0"
LIMIT_RULE = f"must be an integer of at least 1 (values above {MAX_PAGE} are treated as {MAX_PAGE})"
TIME_RULE = (
    "must be an RFC 3339 date-time such as 2026-11-30T10:00:00Z (a + in an offset must be "
    "sent as %2B in a URL)"
)
ORDER_RULE = "must be asc (oldest first, the default) or desc (newest first)"
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.(\d+))?(?:[Zz]|[+-]\d{2}:\d{2})?"
)


def invalid(name: str, rule: str, raw: str) -> Rejection:
    return Rejection(
        422,
        "validation",
        f"{name} {rule}; got {raw[:100]!r}",
        [Detail(None, name, rule)],
    )


def int_arg(
    args: Mapping[str, str],
    name: str,
    default: int,
    minimum: int,
    rule: str,
    maximum: int = MAX_CURSOR,
) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise invalid(name, rule, raw)
    return value


def time_arg(args: Mapping[str, str], name: str) -> str | None:
    """An RFC 3339 bound as ``YYYY-MM-DDTHH:MM:SS.ffffff`` in UTC (no offset means UTC)."""
    raw = args.get(name)
    if raw is None:
        return None
    match = _RFC3339.fullmatch(raw.strip())
    if match is None:
        raise invalid(name, TIME_RULE, raw)
    text = raw.strip()
    if match.group(1) and len(match.group(1)) > 6:  # finer than microseconds: cut, as stored
        text = text.replace("." + match.group(1), "." + match.group(1)[:6], 1)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:  # 2026-02-30 and the like
        raise invalid(name, TIME_RULE, raw) from None
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            raise invalid(name, f"{TIME_RULE}, within years 1 to 9999 in UTC", raw) from None
    return moment.isoformat(timespec="microseconds")


def offset_rule(max_offset: int, cursor: str) -> str:
    return (
        f"must be an integer from 0 to {max_offset}, the limit "
        f"(AGGREGATOR_MAX_OFFSET); page deeper with {cursor}=<seq> (the Link header)"
    )


def read_query(args: Mapping[str, str], *, max_offset: int) -> EventQuery:
    """The filters, cursors and page of a ``GET /events`` request; raises ``Rejection``.
    ``max_offset``: an offset makes the store read and skip every row before it."""
    order = args.get("order", "asc")
    if order not in ("asc", "desc"):
        raise invalid("order", ORDER_RULE, order)
    q = args.get("q")
    search = None
    if q is not None:
        try:
            search = parse(q)
        except QuerySyntaxError as exc:
            raise Rejection(
                422,
                "validation",
                f"{exc} (docs/search.md has the syntax)",
                [Detail(None, "q", str(exc))],
            ) from None
    return EventQuery(
        topic=args.get("topic"),
        source=args.get("source"),
        since=time_arg(args, "since"),
        until=time_arg(args, "until"),
        search=search,
        after=int_arg(args, "after", 0, 0, CURSOR_RULE),
        before=int_arg(args, "before", 0, 1, "must be a seq cursor, an integer of at least 1"),
        descending=order == "desc",
        limit=min(int_arg(args, "limit", DEFAULT_PAGE, 1, LIMIT_RULE), MAX_PAGE),
        offset=int_arg(
            args,
            "offset",
            0,
            0,
            offset_rule(max_offset, "before" if order == "desc" else "after"),
            max_offset,
        ),
    )


def next_link(args: Mapping[str, str], query: EventQuery, last_seq: int) -> str:
    """The next page: every filter as the client sent it, the cursor moved past ``last_seq``
    (``before`` when newest first), ``offset`` dropped (the cursor has passed it)."""
    kept = {
        name: args[name]
        for name in ("topic", "source", "since", "until", "q", "order")
        if name in args
    }
    if query.descending:
        if query.after:
            kept["after"] = str(query.after)
        kept["before"] = str(last_seq)
    else:
        kept["after"] = str(last_seq)
        if query.before:
            kept["before"] = str(query.before)
    kept["limit"] = str(query.limit)
    return f'</events?{urlencode(kept)}>; rel="next"'


def search_refused(exc: SearchOff | SearchBuilding) -> Rejection:
    if isinstance(exc, SearchOff):
        return Rejection(
            400,
            "search_off",
            "q needs the full-text index, which is off on this server: start it with "
            "AGGREGATOR_SEARCH=on (or --search); the other filters (topic, source, since, "
            "until, order) work without it",
        )
    return Rejection(
        503,
        "search_building",
        f"the full-text index is being built after search was turned on: {exc}; "
        f"retry in a while (the other filters work meanwhile)",
        retry_after=RETRY_AFTER_SECONDS,
    )


async def stream_filters(readers: ReaderPool, args: Mapping[str, str]) -> EventQuery | None:
    """The ``source`` and ``q`` filters of ``GET /subscribe`` (None without them). ``q`` is
    refused as on ``/events`` when the index cannot answer the replay."""
    if "source" not in args and "q" not in args:
        return None
    kept = {name: args[name] for name in ("topic", "source", "q") if name in args}
    query = read_query(kept, max_offset=0)  # a stream has no offset
    if query.search is not None:
        probe = replace(query, limit=1)
        try:
            await readers.run(lambda r: r.find(probe), search=True)
        except (SearchOff, SearchBuilding) as exc:
            raise search_refused(exc) from None
    return query
