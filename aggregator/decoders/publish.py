"""The body of ``POST /publish``: decoded straight into msgspec Structs, then validated.

Decoding is validation. The fast path decodes a whole body into typed Structs; only a body that
fails goes through the slow path, which re-reads it item by item and field by field to name every
problem (``details``) instead of msgspec's first one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from aggregator.decoders.content import decode_content, media_type, unsupported_media_type
from aggregator.messages import Detail, EventRecord, Limits, Rejection

MAX_TEXT = 255
# No whitespace (Unicode's, as Python's str.isspace knows it) and no control characters (Cc).
# The published schema's rule; the decoder checks it with ``_text_problem``, not a regex.
TOPIC_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f]+$"

# Lengths are checked by msgspec; the character rules after it, because msgspec runs a pattern
# through Python's re once per field, which cost more than decoding the rest of the event.
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
EMPTY_PAYLOAD = msgspec.Raw(b"{}")


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    topic: Text
    event_id: Text
    timestamp: datetime
    source: Text
    # Kept as the raw JSON text received: stored as is, never re-encoded.
    payload: msgspec.Raw = EMPTY_PAYLOAD


RULES = {
    "topic": f"must be a string of 1–{MAX_TEXT} characters without whitespace or control "
    "characters",
    "event_id": f"must be a string of 1–{MAX_TEXT} characters, not blank",
    "timestamp": "must be an RFC 3339 date-time such as 2026-11-21T10:00:00Z",
    "source": f"must be a string of 1–{MAX_TEXT} characters, not blank",
    "payload": "must be a JSON object",
}
FIELD_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "topic": msgspec.json.Decoder(str),
    "event_id": msgspec.json.Decoder(str),
    "timestamp": msgspec.json.Decoder(datetime),
    "source": msgspec.json.Decoder(str),
    "payload": msgspec.json.Decoder(dict[str, msgspec.Raw]),
}
SERVER_FIELDS = ("seq", "received_at")
_COLONLESS_OFFSET = re.compile(rb"[+-]\d{4}$")

_ONE = msgspec.json.Decoder(EventIn)
_MANY = msgspec.json.Decoder(list[EventIn])
_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_ANY = msgspec.json.Decoder()
SHAPE_RULE = 'the body must be an event object, an array of events, or {"events": [...]}'


def normalise_timestamp(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` in UTC; a value without an offset is taken as UTC."""
    if value.tzinfo is UTC:  # the usual case ("…Z"): isoformat ends in +00:00 (30% faster)
        return value.isoformat()[:-6] + "Z"
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def decode_publish(body: bytes, headers: Mapping[str, str], limits: Limits) -> list[EventRecord]:
    """The events of one ``POST /publish`` body, validated and normalised, in request order.

    ``headers`` by lower-case name. Raises ``Rejection`` with the contract's status (400, 413,
    415 or 422) otherwise.
    """
    media = media_type(headers)
    if media in ("", "application/json") or media.endswith("+json"):
        ndjson = False
    elif media == "application/x-ndjson":
        ndjson = True
    else:
        raise unsupported_media_type(
            media, "'Content-Type: application/json' or 'Content-Type: application/x-ndjson'"
        )
    body = decode_content(body, headers, limits.max_body_bytes)
    records: list[EventRecord] = []
    details: list[Detail] = []
    try:
        items = _decode_ndjson(body, limits) if ndjson else _decode_json(body, limits)
        if not items:
            raise Rejection(422, "validation", "the batch is empty; send at least one event", [])
        # msgspec writes a UTC datetime as "…[.ffffff]Z" in C, 50× faster than isoformat.
        stamps = msgspec.to_builtins([e.timestamp for _, e in items if isinstance(e, EventIn)])
        typed = iter(stamps)
        offsets = []  # typed events whose timestamp is not in UTC's "Z": their text is checked
        # msgspec reads "+0000" as UTC, "Z": a plain search (memchr-fast) finds its text.
        zero_offset = b'+0000"' in body or b'-0000"' in body
        for index, event in items:
            if isinstance(event, EventIn):
                stamp = next(typed)
                if stamp[-1:] != "Z" or zero_offset:
                    offsets.append(index)
                _check_and_append(index, event, stamp, limits, records, details)
            else:
                problems = list(_problems(index, event, limits))
                details.extend(problems or _typed_problem(index, event))
        if offsets:
            # msgspec takes "+0700" for "+07:00"; RFC 3339 (and the contract) require the colon.
            # Read only when an offset other than Z was given: the usual body pays nothing.
            raw = _raw_lines(body) if ndjson else dict(_raw_json(body))
            for index in offsets:
                problem = _offset_problem(_OBJECT.decode(raw[index])["timestamp"])
                if problem:
                    details.append(Detail(index, "timestamp", f"{RULES['timestamp']} ({problem})"))
            details.sort(key=lambda detail: detail.index or 0)
    except RecursionError:
        # msgspec decodes nested JSON recursively; a hostile body must not crash the worker.
        raise Rejection(
            400, "malformed", "the body is nested too deeply to decode; events are shallow"
        ) from None
    except UnicodeDecodeError as exc:  # msgspec raises it for invalid UTF-8 inside a string
        raise Rejection(400, "malformed", f"the body is not valid UTF-8: {exc}") from None
    if details:
        raise _invalid(details, ndjson)
    if len(records) != len(items):  # an event is stored or named in details, never dropped
        raise RuntimeError(f"{len(items)} events decoded but {len(records)} kept, no problem named")
    return records


def _malformed(what: str, exc: msgspec.DecodeError) -> Rejection:
    return Rejection(400, "malformed", f"{what} is not valid JSON: {exc}")


def _invalid(details: list[Detail], ndjson: bool) -> Rejection:
    noun = "problem" if len(details) == 1 else "problems"
    first = details[0]
    if first.index is None:
        where = "the body"
    elif ndjson:  # lines counted from 1, as editors show them (details' index is 0-based)
        where = f"line {first.index + 1}"
    else:
        where = f"event {first.index}"
    field = f" field {first.field!r}" if first.field else ""
    return Rejection(
        422,
        "validation",
        f"{len(details)} {noun}; first: {where}{field} {first.message}; nothing was stored",
        details,
    )


def _check_count(count: int, limits: Limits) -> None:
    if count > limits.max_batch_events:
        raise Rejection(
            413,
            "too_large",
            f"the batch has {count} events; the limit is "
            f"{limits.max_batch_events} (AGGREGATOR_MAX_BATCH_EVENTS)",
        )


def _decode_json(body: bytes, limits: Limits) -> list[tuple[int, EventIn | msgspec.Raw]]:
    """(index, event) pairs: typed events on the fast path, raw items when any item is invalid."""
    start = body.lstrip()[:1]
    if start == b"{":
        try:
            top = _OBJECT.decode(body)
        except msgspec.DecodeError as exc:
            raise _malformed("the body", exc) from None
        if "events" not in top:
            try:
                return [(0, _ONE.decode(body))]
            except msgspec.ValidationError:
                return [(0, msgspec.Raw(body))]
        if len(top) > 1:
            others = ", ".join(sorted(k for k in top if k != "events"))
            raise Rejection(
                422,
                "validation",
                f"the wrapper object takes only the key 'events'; remove: {others}",
                [],
            )
        body = top["events"]
        if bytes(body)[:1] != b"[":
            raise Rejection(422, "validation", "'events' must be an array of events", [])
    elif start != b"[":
        try:
            _ANY.decode(body)
        except msgspec.DecodeError as exc:
            raise _malformed("the body", exc) from None
        raise Rejection(422, "validation", SHAPE_RULE, [])
    items: list[EventIn] | list[msgspec.Raw]
    try:
        try:
            items = _MANY.decode(body)
        except msgspec.ValidationError:
            items = _ARRAY.decode(body)  # the slow path names each problem
    except msgspec.DecodeError as exc:
        raise _malformed("the body", exc) from None
    _check_count(len(items), limits)
    return list(enumerate(items))


def _raw_json(body: bytes) -> list[tuple[int, msgspec.Raw]]:
    """The items of a JSON body that decoded as events, each as its raw text."""
    top = _OBJECT.decode(body) if body.lstrip()[:1] == b"{" else None
    if top is not None and "events" not in top:
        return [(0, msgspec.Raw(body))]
    return list(enumerate(_ARRAY.decode(body if top is None else top["events"])))


def _raw_lines(body: bytes) -> dict[int, msgspec.Raw]:
    return {i: msgspec.Raw(line) for i, line in enumerate(body.split(b"\n")) if line.strip()}


def _offset_problem(raw: msgspec.Raw) -> str | None:
    """What is wrong with a timestamp's offset as written (msgspec accepts ``+0700``)."""
    text = bytes(raw).strip(b'"')
    if _COLONLESS_OFFSET.search(text):
        return f"the offset needs a colon, as in +07:00; got {text.decode(errors='replace')!r}"
    return None


def _decode_ndjson(body: bytes, limits: Limits) -> list[tuple[int, EventIn | msgspec.Raw]]:
    """One event per line; blank lines are skipped; an item's index is its 0-based line number
    (messages name lines 1-based, as editors do)."""
    lines = [(i, line) for i, line in enumerate(body.split(b"\n")) if line.strip()]
    _check_count(len(lines), limits)
    items: list[tuple[int, EventIn | msgspec.Raw]] = []
    for index, line in lines:
        try:
            items.append((index, _ONE.decode(line)))
        except msgspec.ValidationError:
            # The typed decode stops at the first wrong field, before it has read the rest of
            # the line: the line must still be checked as JSON before the slow path reads it.
            try:
                _ANY.decode(line)
            except msgspec.DecodeError as exc:
                raise _malformed(f"line {index + 1}", exc) from None
            items.append((index, msgspec.Raw(line)))
        except msgspec.DecodeError as exc:
            raise _malformed(f"line {index + 1}", exc) from None
    return items


def _check_and_append(
    index: int,
    event: EventIn,
    stamp: str,
    limits: Limits,
    records: list[EventRecord],
    details: list[Detail],
) -> None:
    """Checks what msgspec did not (characters, payload); appends the record if all is well."""
    topic = event.topic
    # Cheap tests that pass every usual value; the exact, per-character rule only otherwise.
    if (
        not topic.isprintable()
        or " " in topic
        or event.event_id.isspace()
        or event.source.isspace()
    ):
        for name in ("topic", "event_id", "source"):
            problem = _text_problem(name, getattr(event, name))
            if problem:
                details.append(Detail(index, name, f"{RULES[name]} ({problem})"))
    payload = str(event.payload, "utf-8")  # msgspec has checked the UTF-8
    if payload[:1] != "{":
        details.append(Detail(index, "payload", RULES["payload"]))
    elif len(event.payload) > limits.max_payload_bytes:
        details.append(Detail(index, "payload", _payload_too_large(len(event.payload), limits)))
    if stamp[-1:] != "Z":  # an offset other than UTC's, or none
        try:
            stamp = normalise_timestamp(event.timestamp)
        except OverflowError:
            details.append(Detail(index, "timestamp", "is out of range once converted to UTC"))
    if not details:
        records.append(EventRecord(topic, event.event_id, stamp, event.source, payload))


def _payload_too_large(size: int, limits: Limits) -> str:
    return (
        f"is {size} bytes; the limit is {limits.max_payload_bytes} (AGGREGATOR_MAX_PAYLOAD_BYTES)"
    )


def _problems(index: int, raw: msgspec.Raw, limits: Limits) -> Iterator[Detail]:
    """Every problem of one invalid item, each with its field and the rule it broke."""
    try:
        fields = _OBJECT.decode(raw)
    except msgspec.ValidationError:
        yield Detail(index, None, "an event must be a JSON object")
        return
    for name in fields:
        if name in SERVER_FIELDS:
            yield Detail(index, name, "is assigned by the server; do not send it")
        elif name not in RULES:
            yield Detail(
                index, name, "is not a field of an event; the fields are " + ", ".join(RULES)
            )
    for name, rule in RULES.items():
        if name not in fields:
            if name != "payload":
                yield Detail(index, name, f"is required; it {rule}")
            continue
        try:
            value = FIELD_DECODERS[name].decode(fields[name])
        except msgspec.ValidationError as exc:
            got = str(exc).removesuffix(" - at `$`")
            yield Detail(index, name, f"{rule} ({got})")
            continue
        if isinstance(value, str):
            problem = _text_problem(name, value)
            if problem:
                yield Detail(index, name, f"{rule} ({problem})")
        elif name == "payload" and len(fields[name]) > limits.max_payload_bytes:
            yield Detail(index, name, _payload_too_large(len(fields[name]), limits))
        elif name == "timestamp":
            problem = _offset_problem(fields[name])
            if problem:
                yield Detail(index, name, f"{rule} ({problem})")
                continue
            try:
                normalise_timestamp(value)
            except OverflowError:
                yield Detail(index, name, "is out of range once converted to UTC")


def _typed_problem(index: int, raw: msgspec.Raw) -> list[Detail]:
    """The typed decode's complaint about an item the field-by-field check passed: a field given
    twice whose first value is of the wrong type (the typed decode checks each copy's type, a
    dict keeps the last, which alone is checked against the field's rule: docs/contract.md).
    Empty for a valid item of a batch that another item breaks."""
    try:
        _ONE.decode(raw)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$.")
        field = path.removesuffix("`") or None
        return [
            Detail(
                index,
                field,
                f"{message}; a field given more than once must be of its type each time (the "
                "last copy is the one kept and checked)",
            )
        ]
    return []


def _text_problem(name: str, value: str) -> str | None:
    """What breaks the rule of a string field, in words; None when it is fine."""
    if not value:
        return "got an empty string"
    if len(value) > MAX_TEXT:
        return f"got {len(value)} characters"
    if name == "topic":
        for position, char in enumerate(value):
            if char.isspace() or unicodedata.category(char) == "Cc":
                return f"got {char!r} at position {position}"
    elif value.isspace():
        return "got only whitespace"
    return None
