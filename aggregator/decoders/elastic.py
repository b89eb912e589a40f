"""The Elasticsearch bulk API (``POST /_bulk``, ``POST /{index}/_bulk``): NDJSON action lines,
each but ``delete`` followed by its document, turned into events.

Unlike ``/publish``, a bulk request is not atomic (Elasticsearch's own rule, which its shippers'
retry logic expects): an item that breaks a rule is refused alone, with its reason, and the
others are stored. A problem of the whole body (not pairs of JSON lines, too large, too many
items) refuses the whole request, and nothing is stored.

The decoder returns the events to commit and fills ``BulkItems`` with what the front needs to
answer each item (its action, index and id, or its refusal); the front joins it with the
writer's per-event flags (stored / already there) to say ``created``, ``noop`` or ``409``.

Mapping (docs/elasticsearch.md): topic ← ``_index`` else the URL's index; event_id ← ``_id``
else the BLAKE2b-128 hex digest of the document's canonical JSON (sorted keys, compact), so two
byte-identical documents, or the same document with its keys reordered, are one event;
timestamp ← ``@timestamp`` (RFC 3339, or epoch milliseconds) else ``timestamp`` else the time of
receipt; source ← ``host.name``, ``host.hostname``, ``host`` (a string), ``service.name``,
``agent.name`` else ``_bulk``; payload ← the document as received.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from aggregator.decoders.content import decode_content, media_type, unsupported_media_type
from aggregator.decoders.elastic_document import (
    DOC,
    TYPED_DOC,
    Doc,
    Refused,
    TypedDoc,
    content_id,
    odd,
    source_of,
    timestamp_of,
)
from aggregator.decoders.publish import MAX_TEXT, _text_problem, normalise_timestamp
from aggregator.messages import EventRecord, Limits, Rejection

ACTIONS = ("create", "index", "update", "delete")
LINES_PER_ITEM = 4  # lines of the body read per item allowed: 2, and as many blank
MEDIA_TYPES = (
    "",
    "application/json",
    "application/x-ndjson",
    "application/vnd.elasticsearch+json",
    "application/vnd.elasticsearch+x-ndjson",
)


# Structs made by the hundred per request hold no cycles: no GC tracking (gc=False).
class _Meta(msgspec.Struct, gc=False):
    """An action's metadata; other keys (``_type``, ``routing``, ``pipeline``…) are ignored."""

    index: str | None = msgspec.field(name="_index", default=None)
    # An integer _id is its decimal text, as Elasticsearch reads it (the Python client's
    # helpers send {"_id": 5} as a number; a whole batch was refused for it).
    id: str | int | None = msgspec.field(name="_id", default=None)


class _UsualMeta(msgspec.Struct, gc=False):
    """The usual request's metadata: a string ``_id`` (an integer one takes the general path;
    the union cost the fast path a tenth of its time)."""

    index: str | None = msgspec.field(name="_index", default=None)
    id: str | None = msgspec.field(name="_id", default=None)


class _Usual(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """An action line of the usual request: ``create`` or ``index`` (checked after decoding)."""

    create: _UsualMeta | None = None
    index: _UsualMeta | None = None


_ACTION = msgspec.json.Decoder(dict[str, _Meta])
_USUAL = msgspec.json.Decoder(_Usual)


class Item(msgspec.Struct, gc=False):
    """One bulk item as the response names it. ``event`` is its position among the events sent
    to the writer; None when the item was refused (``status``, ``error`` and ``reason``)."""

    action: str
    index: str | None
    id: str | None
    event: int | None = None
    status: int = 0
    error: str = ""
    reason: str = ""


@dataclass(slots=True)
class BulkItems:
    """Filled by ``decode_bulk`` for the front, in request order: ``items``; or, for a request
    whose every item became an event (the usual one), only the ``actions``: item i is then
    event i, its index the topic and its id the event_id."""

    items: list[Item] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)


def _bad_body(message: str) -> Rejection:
    return Rejection(400, "illegal_argument_exception", message)


def decode_bulk(
    body: bytes,
    headers: Mapping[str, str],
    limits: Limits,
    *,
    url_index: str | None,
    out: BulkItems,
    now: datetime | None = None,
) -> list[EventRecord]:
    """The events of one bulk body; the per-item answers go to ``out``. Raises ``Rejection``
    (400, 413, 415) for a problem of the whole request, with ``out`` left empty."""
    media = media_type(headers)
    if media not in MEDIA_TYPES:
        raise unsupported_media_type(media, "'Content-Type: application/x-ndjson'")
    # A UTF-8 byte order mark (Windows tools write one) is not part of the first action line.
    body = decode_content(body, headers, limits.max_body_bytes).removeprefix(b"\xef\xbb\xbf")
    # Lines are counted before they are split: 4 MiB of newlines took the event loop 0.4 s to
    # split and skip, 25 times what 4 MiB of documents takes.
    lines_read = LINES_PER_ITEM * limits.max_batch_events
    if (newlines := body.count(b"\n")) > lines_read:
        raise Rejection(
            413,
            "too_large",
            f"the bulk body has {newlines} lines; at most {lines_read} are read "
            f"({LINES_PER_ITEM} per item of AGGREGATOR_MAX_BATCH_EVENTS: an action, its document "
            "and blank lines between); nothing was stored",
        )
    # Blank lines are skipped, as rsyslog sends one after each document.
    lines = [line for line in body.split(b"\n") if line.strip()]
    if not lines:
        raise _bad_body("the bulk request is empty; send action and document lines")
    received = normalise_timestamp(now or datetime.now(UTC))
    fast = _usual(lines, url_index, limits, received)
    if fast is not None:
        out.events, out.actions = fast
        return out.events
    items: list[Item] = []
    records: list[EventRecord] = []
    topics: dict[str, str | None] = {}  # topic -> its problem; checked once per request
    position = 0
    try:
        while position < len(lines):
            number = position  # the action's line among the non-blank lines, 0-based
            action, meta = _action(lines[position], body, number)
            position += 1
            if len(items) >= limits.max_batch_events:
                raise Rejection(
                    413,
                    "too_large",
                    f"the bulk request has more than {limits.max_batch_events} items; the "
                    "limit is that many (AGGREGATOR_MAX_BATCH_EVENTS); nothing was stored",
                )
            index = meta.index or url_index
            item = Item(action, index, _id_text(meta.id))
            items.append(item)
            if action == "delete":
                _refuse(item, "events are immutable: delete is not supported")
                continue
            if position >= len(lines):
                raise _bad_body(
                    f"line {_line_of(body, number)} ({action}) has no document line after "
                    "it; each "
                    "create, index and update action is followed by its document"
                )
            document = lines[position].strip()
            position += 1
            if action == "update":
                _refuse(item, "events are immutable: update is not supported")
                continue
            record = _record(item, document, limits, received, topics)
            if record is not None:
                item.event = len(records)
                records.append(record)
    except RecursionError:
        raise _bad_body("the body is nested too deeply to decode") from None
    out.items = items
    return records


def _usual(
    lines: list[bytes], url_index: str | None, limits: Limits, received: str
) -> tuple[list[EventRecord], list[str]] | None:
    """The usual request, in one loop with no calls but into C: ``create`` and ``index`` pairs,
    documents with the usual field types, every item valid. None for anything else, which the
    general path then reads (and refuses) item by item: the two agree on every valid item."""
    if len(lines) % 2 or len(lines) > 2 * limits.max_batch_events:
        return None
    records: list[EventRecord] = []
    actions: list[str] = []
    topics: set[str] = set()
    max_payload = limits.max_payload_bytes
    try:
        for n in range(0, len(lines), 2):
            action = _USUAL.decode(lines[n])  # update, delete, anything else: DecodeError
            meta = action.create
            name = "create"
            if meta is None:
                meta = action.index
                name = "index"
                if meta is None:
                    return None
            elif action.index is not None:
                return None
            topic = meta.index or url_index
            if topic is None:
                return None
            if topic not in topics:
                if _text_problem("topic", topic):
                    return None
                topics.add(topic)
            document = lines[n + 1]
            if document[:1] != b"{" or document[-1:] != b"}" or len(document) > max_payload:
                return None  # surrounding whitespace, or not an object: the general path
            doc = TYPED_DOC.decode(document)
            event_id = meta.id
            if not event_id:
                event_id = content_id(document)
            elif len(event_id) > MAX_TEXT or event_id[0].isspace():
                return None
            value = doc.at_timestamp
            if value is None:
                value = doc.timestamp
            stamp: str
            if value is None:
                stamp = received
            elif value.__class__ is datetime and value.tzinfo is UTC:
                stamp = msgspec.to_builtins(value)
            else:
                stamp = timestamp_of(doc) or received
            source = doc.host_name
            if source is None:
                source = source_of(doc)
                if source is None or (odd(source) and _text_problem("source", source)):
                    return None
            elif odd(source):
                return None
            actions.append(name)
            records.append(EventRecord(topic, event_id, stamp, source, document.decode("utf-8")))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, Refused):
        return None  # msgspec's ValidationError is a DecodeError
    return records, actions


def _id_text(value: str | int | None) -> str | None:
    """The event id an action's ``_id`` gives; None for none or an empty one (rsyslog's)."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _line_of(body: bytes, nonblank: int) -> int:
    """The line of ``body`` (1-based, as an editor and Elasticsearch count) that is its
    ``nonblank``-th non-blank line (0-based): messages counted non-blank lines from 0, which
    pointed elsewhere in rsyslog's bodies (a blank line after each document)."""
    seen = -1
    lines = body.split(b"\n")
    for number, line in enumerate(lines, 1):
        if line.strip():
            seen += 1
            if seen == nonblank:
                return number
    return len(lines)


def _action(line: bytes, body: bytes, nonblank: int) -> tuple[str, _Meta]:
    try:
        action = _ACTION.decode(line)
    except msgspec.DecodeError as exc:  # ValidationError too: its metadata has the wrong shape
        raise _bad_body(
            f"line {_line_of(body, nonblank)} is not a valid action line ({exc}); expected e.g. "
            '{"create":{"_index":"logs","_id":"1"}}; nothing was stored'
        ) from None
    except UnicodeDecodeError as exc:
        number = _line_of(body, nonblank)
        raise _bad_body(f"line {number} is not valid UTF-8: {exc}; nothing was stored") from None
    if len(action) == 1:
        [(name, meta)] = action.items()
        if name in ACTIONS:
            return name, meta
    number = _line_of(body, nonblank)
    raise _bad_body(
        f"line {number}: an action line names exactly one of {', '.join(ACTIONS)}; "
        f"got {', '.join(map(repr, action)) or 'none'}; nothing was stored"
    )


def _refuse(item: Item, reason: str, error: str = "illegal_argument_exception") -> None:
    item.status, item.error, item.reason = 400, error, reason


def _record(
    item: Item, document: bytes, limits: Limits, received: str, topics: dict[str, str | None]
) -> EventRecord | None:
    """The event of a create or index item; None (and the item refused) when it breaks a rule."""
    try:
        return _event(item, document, limits, received, topics)
    except Refused as refused:
        _refuse(item, refused.reason, refused.error)
    except RecursionError:  # this item alone: it refused the whole request before
        reason = (
            "the document is nested too deeply to decode (at most about "
            f"{sys.getrecursionlimit()} levels of objects and arrays)"
        )
        _refuse(item, reason, "document_parsing_exception")
    return None


def _event(
    item: Item, document: bytes, limits: Limits, received: str, topics: dict[str, str | None]
) -> EventRecord:
    if item.index is None:
        raise Refused(
            "index is missing: give _index in the action or the URL /{index}/_bulk",
            "action_request_validation_exception",
        )
    try:
        problem = topics[item.index]
    except KeyError:
        problem = topics[item.index] = _text_problem("topic", item.index)
    if problem:
        raise Refused(
            f"the index is the topic: 1–{MAX_TEXT} characters without whitespace or control "
            f"characters ({problem})",
            "invalid_index_name_exception",
        )
    doc: TypedDoc | Doc
    try:
        try:
            doc = TYPED_DOC.decode(document)
        except msgspec.ValidationError:
            doc = DOC.decode(document)
        payload = document.decode("utf-8")
    except msgspec.ValidationError:
        raise Refused("the document must be a JSON object") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Refused(f"the document is not valid JSON: {exc}") from None
    if len(document) > limits.max_payload_bytes:
        raise Refused(
            f"the document is {len(document)} bytes; the limit is "
            f"{limits.max_payload_bytes} (AGGREGATOR_MAX_PAYLOAD_BYTES)"
        )
    if item.id is None:
        item.id = content_id(document)
    else:
        problem = _text_problem("event_id", item.id) if odd(item.id) else None
        if problem:
            raise Refused(
                f"_id must be 1–{MAX_TEXT} characters, not blank ({problem})",
                "illegal_argument_exception",
            )
    source = source_of(doc)
    if source is None or (odd(source) and _text_problem("source", source)):
        raise Refused(
            "the source field (the first of host.name, host.hostname, host, service.name, "
            f"agent.name) must be a string of 1–{MAX_TEXT} characters, not blank"
        )
    return EventRecord(item.index, item.id, timestamp_of(doc) or received, source, payload)
