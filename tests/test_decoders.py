"""The decoders on their own: body and headers in, events or a ``Rejection`` out.

tests/test_publish.py drives the same rules over HTTP; these call the functions directly, so that
each rule, limit and message is checked in microseconds (``make mutation`` runs them for every
mutant of ``aggregator/decoders/``).
"""

from __future__ import annotations

import gzip
import json
import random
import tracemalloc
import zlib
from typing import Any

import pytest

from aggregator.decoders.content import GZIP_FEED, MAX_GZIP_MEMBERS, decode_content, media_type
from aggregator.decoders.publish import decode_publish, normalise_timestamp
from aggregator.messages import Detail, EventRecord, Limits, Rejection
from tests.support import event

LIMITS = Limits(max_body_bytes=4096, max_batch_events=5, max_payload_bytes=64)
JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}


def decode(body: Any, headers: dict[str, str] | None = None, limits: Limits = LIMITS) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode_publish(raw, JSON if headers is None else headers, limits)


def rejected(
    body: Any, headers: dict[str, str] | None = None, limits: Limits = LIMITS
) -> Rejection:
    with pytest.raises(Rejection) as caught:
        decode(body, headers, limits)
    return caught.value


# --- accepted ------------------------------------------------------------------------------


def test_one_event_an_array_and_the_wrapper_decode_in_order() -> None:
    one = event(event_id="1", payload={"a": 1})
    assert decode(one) == [EventRecord("t", "1", "2026-11-21T10:00:00Z", "tests", '{"a": 1}')]
    many = [event(event_id=str(i)) for i in range(3)]
    assert [r.event_id for r in decode(many)] == ["0", "1", "2"]
    assert decode({"events": many}) == decode(many)
    # Whitespace around the document, and the payload kept byte for byte as sent.
    raw = b'  \n[{"topic":"t","event_id":"x","timestamp":"2026-11-21T10:00:00Z",'
    raw += b'"source":"s","payload":{ "k" : [1, 2] }}]\n'
    assert decode(raw)[0].payload == '{ "k" : [1, 2] }'


def test_an_absent_payload_is_an_empty_object() -> None:
    body = event()
    del body["payload"]
    assert decode(body)[0].payload == "{}"


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "Application/JSON; charset=utf-8", "application/vnd.x+json"],
)
def test_json_media_types(content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    assert len(decode(event(), headers)) == 1


def test_media_type_is_lower_case_without_parameters() -> None:
    assert media_type({"content-type": " Application/X-NDJSON ; charset=utf-8"}) == (
        "application/x-ndjson"
    )
    assert media_type({}) == ""
    # Only what comes before the first ';' (not the first blank, not the last ';').
    assert media_type({"content-type": "Application/JSON;charset=utf-8;q=1"}) == (
        "application/json"
    )


def test_ndjson_lines_skip_blank_ones() -> None:
    lines = [json.dumps(event(event_id="a")), "", "  \t", json.dumps(event(event_id="b")), ""]
    records = decode("\n".join(lines).encode(), NDJSON)
    assert [r.event_id for r in records] == ["a", "b"]


@pytest.mark.parametrize(
    ("stamp", "stored"),
    [
        ("2026-11-21T10:00:00Z", "2026-11-21T10:00:00Z"),
        ("2026-11-21T10:00:00.25Z", "2026-11-21T10:00:00.250000Z"),
        ("2026-11-21 10:00:00Z", "2026-11-21T10:00:00Z"),
        ("2026-11-21T10:00:00+02:00", "2026-11-21T08:00:00Z"),
        ("2026-11-21T10:00:00-00:30", "2026-11-21T10:30:00Z"),
        ("2026-11-21T10:00:00+00:00", "2026-11-21T10:00:00Z"),
        ("2026-11-21T10:00:00", "2026-11-21T10:00:00Z"),  # no offset: taken as UTC
        ("2026-11-21T10:00:00.000001", "2026-11-21T10:00:00.000001Z"),
    ],
)
def test_timestamps_are_normalised_to_utc(stamp: str, stored: str) -> None:
    assert decode(event(timestamp=stamp))[0].timestamp == stored
    assert decode(f"{json.dumps(event(timestamp=stamp))}\n".encode(), NDJSON)[0].timestamp == (
        stored
    )


def test_normalise_timestamp_directly() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    assert normalise_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    east = timezone(timedelta(hours=5))
    assert normalise_timestamp(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=east)) == (
        "2026-01-01T22:04:05.000006Z"
    )
    assert normalise_timestamp(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"


def test_unusual_but_valid_text_passes() -> None:
    body = event(topic="soft\u00adhyphen", event_id=" padded ", source="a source")
    assert decode(body)[0][:2] == ("soft\u00adhyphen", " padded ")


def test_limits_are_inclusive() -> None:
    five = [event(event_id=str(i)) for i in range(5)]
    assert len(decode(five)) == 5
    payload = {"k": "x" * (64 - len('{"k":""}'))}  # exactly 64 bytes of JSON text
    raw = json.dumps(event(payload=payload), separators=(",", ":")).encode()
    assert len(decode(raw)[0].payload) == 64
    max_text = "x" * 255
    assert len(decode(event(topic=max_text, event_id=max_text, source=max_text))) == 1


# --- refused -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_other_media_types_are_415_naming_the_ones_to_send(content_type: str) -> None:
    refusal = rejected(event(), {"content-type": content_type})
    assert (refusal.status, refusal.error) == (415, "unsupported_media_type")
    assert refusal.message == (
        f"Content-Type {content_type!r} is not accepted; send "
        "'Content-Type: application/json' or 'Content-Type: application/x-ndjson'"
    )


def test_too_many_events_is_413_naming_the_limit() -> None:
    six = [event(event_id=str(i)) for i in range(6)]
    for refusal in (
        rejected(six),
        rejected({"events": six}),
        rejected("\n".join(json.dumps(e) for e in six).encode(), NDJSON),
    ):
        assert (refusal.status, refusal.error) == (413, "too_large")
        assert refusal.message == (
            "the batch has 6 events; the limit is 5 (AGGREGATOR_MAX_BATCH_EVENTS)"
        )


@pytest.mark.parametrize(
    ("body", "headers"),
    [(b"[]", JSON), (b'{"events": []}', JSON), (b"\n \n", NDJSON), (b"", NDJSON)],
)
def test_an_empty_batch_is_422_with_empty_details(body: bytes, headers: dict[str, str]) -> None:
    refusal = rejected(body, headers)
    assert (refusal.status, refusal.error, refusal.details) == (422, "validation", [])
    assert refusal.message == "the batch is empty; send at least one event"


@pytest.mark.parametrize("body", [b"42", b'"x"', b"null", b"true", b"  7"])
def test_a_document_of_another_shape_is_422(body: bytes) -> None:
    refusal = rejected(body)
    assert (refusal.status, refusal.error, refusal.details) == (422, "validation", [])
    assert refusal.message == (
        'the body must be an event object, an array of events, or {"events": [...]}'
    )


def test_the_wrapper_takes_only_events_and_an_array() -> None:
    extra = rejected({"events": [event()], "meta": 1, "b": 2})
    assert (extra.status, extra.details) == (422, [])
    assert extra.message == "the wrapper object takes only the key 'events'; remove: b, meta"
    scalar = rejected({"events": {"topic": "t"}})
    assert (scalar.status, scalar.error, scalar.details) == (422, "validation", [])
    assert scalar.message == "'events' must be an array of events"
    one = rejected({"events": [event()], "meta": 1})  # a single key besides 'events'
    assert (one.status, one.error, one.details) == (422, "validation", [])
    assert one.message == "the wrapper object takes only the key 'events'; remove: meta"


@pytest.mark.parametrize(
    ("body", "headers", "start"),
    [
        (b'[{"topic": "a",', JSON, "the body is not valid JSON: "),
        (b'{"topic": ', JSON, "the body is not valid JSON: "),
        (b"{nope", JSON, "the body is not valid JSON: "),
        (b"42 43", JSON, "the body is not valid JSON: "),
        (b"", JSON, "the body is not valid JSON: "),
        (b'{"events": [1,', JSON, "the body is not valid JSON: "),
        (b"\xff\xfe", JSON, "the body is not valid JSON: "),
        # NDJSON lines are named 1-based, as editors show them.
        (json.dumps(event()).encode() + b"\n{oops}\n", NDJSON, "line 2 is not valid JSON: "),
        (b'\n\n{"events": [{"topic": "a"', NDJSON, "line 3 is not valid JSON: "),
        (b'{"topic": 5, "x": [}', NDJSON, "line 1 is not valid JSON: "),
    ],
)
def test_malformed_json_is_400_naming_where(
    body: bytes, headers: dict[str, str], start: str
) -> None:
    refusal = rejected(body, headers)
    assert (refusal.status, refusal.error) == (400, "malformed")
    assert refusal.message.startswith(start), refusal.message


def test_ndjson_messages_name_lines_1_based_and_details_keep_the_0_based_index() -> None:
    """A bad second line said "line 1" while a 422 for the third said "event 2"."""
    lines = [json.dumps(event(event_id=str(n))) for n in range(2)] + [json.dumps(event(source=""))]
    refusal = rejected("\n".join(lines).encode(), NDJSON)
    assert refusal.message.startswith("1 problem; first: line 3 field 'source'"), refusal.message
    assert [(d.index, d.field) for d in refusal.details or []] == [(2, "source")]


@pytest.mark.parametrize(
    ("stamp", "headers"),
    [
        ("2026-11-21T10:00:00+0700", JSON),
        ("2026-11-21T10:00:00.5-0130", NDJSON),
        ("2026-11-21T10:00:00+0000", JSON),
        ("2026-11-21T10:00:00-0000", NDJSON),  # read as UTC too, so its text is checked
    ],
)
def test_an_offset_without_a_colon_is_422_naming_the_timestamp(
    stamp: str, headers: dict[str, str]
) -> None:
    """RFC 3339 requires the colon; msgspec took "+0700" for "+07:00" (issue 12)."""
    good = json.dumps(event(event_id="good", timestamp="2026-11-21T10:00:00+07:00"))
    bad = json.dumps(event(event_id="bad", timestamp=stamp))
    body = f"[{good}, {bad}]" if headers is JSON else f"{good}\n{bad}"
    refusal = rejected(body.encode(), headers)
    assert refusal.status == 422
    [detail] = refusal.details or []
    assert (detail.index, detail.field) == (1, "timestamp")
    assert "the offset needs a colon, as in +07:00" in detail.message
    alone = rejected(bad.encode(), JSON)  # one event alone: the same
    assert [(d.index, d.field) for d in alone.details or []] == [(0, "timestamp")]


def test_invalid_utf8_inside_a_string_is_400() -> None:
    body = json.dumps(event()).encode().replace(b'"tests"', b'"te\xffsts"')
    refusal = rejected(body)
    assert (refusal.status, refusal.error) == (400, "malformed")
    assert refusal.message.startswith("the body is not valid UTF-8: ")


def test_deep_nesting_is_400_not_a_crash() -> None:
    refusal = rejected(b"[" * 100_000 + b"]" * 100_000)
    assert (refusal.status, refusal.error) == (400, "malformed")
    assert refusal.message == "the body is nested too deeply to decode; events are shallow"


LONG = "x" * 256
# (change to a valid event, the field, the message's detail): every rule of the contract.
RULES: list[tuple[dict[str, Any], str, str]] = [
    ({"topic": ""}, "topic", "(got an empty string)"),
    ({"topic": LONG}, "topic", "(got 256 characters)"),
    ({"topic": "auth login"}, "topic", "(got ' ' at position 4)"),
    ({"topic": "a\tb"}, "topic", "(got '\\t' at position 1)"),
    ({"topic": "ab\x01"}, "topic", "(got '\\x01' at position 2)"),
    ({"topic": "a\u2028"}, "topic", "(got '\\u2028' at position 1)"),
    ({"topic": "a\x85"}, "topic", "(got '\\x85' at position 1)"),
    ({"topic": 5}, "topic", "(Expected `str`, got `int`)"),
    ({"event_id": ""}, "event_id", "(got an empty string)"),
    ({"event_id": "  "}, "event_id", "(got only whitespace)"),
    ({"event_id": "\u3000"}, "event_id", "(got only whitespace)"),
    ({"event_id": LONG}, "event_id", "(got 256 characters)"),
    ({"event_id": 7}, "event_id", "(Expected `str`, got `int`)"),
    ({"source": "\t"}, "source", "(got only whitespace)"),
    ({"source": LONG}, "source", "(got 256 characters)"),
    ({"timestamp": "2026-11-21"}, "timestamp", "(Invalid RFC3339 encoded datetime)"),
    ({"timestamp": 1_700_000_000}, "timestamp", "(Expected `datetime`, got `int`)"),
    ({"timestamp": "yesterday"}, "timestamp", "(Invalid RFC3339 encoded datetime)"),
]


def rule_message(field: str) -> str:
    return {
        "topic": "must be a string of 1–255 characters without whitespace or control characters",
        "event_id": "must be a string of 1–255 characters, not blank",
        "source": "must be a string of 1–255 characters, not blank",
        "timestamp": "must be an RFC 3339 date-time such as 2026-11-21T10:00:00Z",
        "payload": "must be a JSON object",
    }[field]


# Ids without backslashes: pytest finds an id holding one only once per process (a second
# pytest.main finds none), and mutmut lists the tests of a mutant, then runs them by id.
IDS = [f"{field}:{got}".replace("\\", "") for _, field, got in RULES]


@pytest.mark.parametrize(("change", "field", "got"), RULES, ids=IDS)
def test_each_rule_is_422_naming_index_field_rule_and_value(
    change: dict[str, Any], field: str, got: str
) -> None:
    refusal = rejected([event(event_id="ok"), {**event(event_id="bad"), **change}])
    assert (refusal.status, refusal.error) == (422, "validation")
    assert refusal.details == [Detail(1, field, f"{rule_message(field)} {got}")]
    assert refusal.message == (
        f"1 problem; first: event 1 field {field!r} {rule_message(field)} {got}; nothing was stored"
    )
    # The same event alone, and as an NDJSON line after a blank one: the same detail.
    alone = rejected({**event(event_id="bad"), **change})
    assert alone.details == [Detail(0, field, f"{rule_message(field)} {got}")]
    line = b"\n" + json.dumps({**event(event_id="bad"), **change}).encode()
    assert rejected(line, NDJSON).details == [Detail(1, field, f"{rule_message(field)} {got}")]


@pytest.mark.parametrize("payload", [None, [1], "{}", 3, True])
def test_a_payload_must_be_an_object(payload: Any) -> None:
    for body in ([event(payload=payload)], event(payload=payload)):
        refusal = rejected(body)
        assert refusal.details is not None
        assert [(d.index, d.field) for d in refusal.details] == [(0, "payload")]
        assert refusal.details[0].message.startswith("must be a JSON object")


def test_a_payload_over_its_limit_names_its_size_and_the_limit() -> None:
    payload = {"k": "x" * 60}
    expected = Detail(0, "payload", "is 68 bytes; the limit is 64 (AGGREGATOR_MAX_PAYLOAD_BYTES)")
    raw = json.dumps(event(payload=payload), separators=(",", ":")).encode()
    assert rejected(raw).details == [expected]
    # Also on the slow path (another event of the request is invalid).
    both = b"[" + raw + b"," + json.dumps(event(topic="a b")).encode() + b"]"
    details = rejected(both).details
    assert details is not None and details[0] == expected and details[1].index == 1


def test_missing_unknown_and_server_fields() -> None:
    refusal = rejected([{"seq": 1, "received_at": "x", "level": "info", "payload": {}}])
    assert refusal.details == [
        Detail(0, "seq", "is assigned by the server; do not send it"),
        Detail(0, "received_at", "is assigned by the server; do not send it"),
        Detail(
            0,
            "level",
            "is not a field of an event; the fields are "
            "topic, event_id, timestamp, source, payload",
        ),
        Detail(0, "topic", f"is required; it {rule_message('topic')}"),
        Detail(0, "event_id", f"is required; it {rule_message('event_id')}"),
        Detail(0, "timestamp", f"is required; it {rule_message('timestamp')}"),
        Detail(0, "source", f"is required; it {rule_message('source')}"),
    ]
    assert refusal.message.startswith("7 problems; first: event 0 field 'seq' is assigned")


def test_an_item_that_is_not_an_object_has_no_field() -> None:
    refusal = rejected([event(), 42, "x"])
    assert refusal.details == [
        Detail(1, None, "an event must be a JSON object"),
        Detail(2, None, "an event must be a JSON object"),
    ]
    assert refusal.message == (
        "2 problems; first: event 1 an event must be a JSON object; nothing was stored"
    )


def test_every_problem_of_every_event_is_reported() -> None:
    bad = {"topic": "a b", "event_id": " ", "timestamp": "2026-11-21", "source": "s"}
    refusal = rejected([event(), {**bad, "payload": [], "extra": 1}, event(source=" ")])
    assert refusal.details is not None
    assert [(d.index, d.field) for d in refusal.details] == [
        (1, "extra"),
        (1, "topic"),
        (1, "event_id"),
        (1, "timestamp"),
        (1, "payload"),
        (2, "source"),
    ]


def test_fast_path_checks_name_each_bad_text_field() -> None:
    # Every field typed correctly, so msgspec accepts the batch; the character rules do not.
    refusal = rejected([event(topic="a b", event_id=" ", source="\u3000")])
    assert refusal.details == [
        Detail(0, "topic", f"{rule_message('topic')} (got ' ' at position 1)"),
        Detail(0, "event_id", f"{rule_message('event_id')} (got only whitespace)"),
        Detail(0, "source", f"{rule_message('source')} (got only whitespace)"),
    ]
    control = rejected([event(topic="a\x7f")])
    assert control.details == [
        Detail(0, "topic", f"{rule_message('topic')} (got '\\x7f' at position 1)")
    ]


def test_a_timestamp_out_of_range_once_in_utc_is_422() -> None:
    for stamp in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        for body in ([event(timestamp=stamp)], [event(timestamp=stamp), event(topic="a b")]):
            details = rejected(body).details
            assert details is not None
            assert details[0] == Detail(0, "timestamp", "is out of range once converted to UTC")


# --- content encoding ----------------------------------------------------------------------


def test_gzip_and_its_members_are_decoded() -> None:
    body = json.dumps(event()).encode()
    assert decode_content(gzip.compress(body), {"content-encoding": "gzip"}, 4096) == body
    assert decode_content(gzip.compress(body), {"content-encoding": " X-GZIP "}, 4096) == body
    two = gzip.compress(b"[1,") + gzip.compress(b"2]")
    assert decode_content(two, {"content-encoding": "gzip"}, 4096) == b"[1,2]"
    assert decode_content(body, {"content-encoding": "identity"}, 10) == body  # no limit here
    assert decode_content(body, {}, 10) == body
    records = decode(gzip.compress(body), {**JSON, "content-encoding": "gzip"})
    assert [r.event_id for r in records] == ["e1"]


def test_the_decompressed_size_is_limited_exactly() -> None:
    assert decode_content(gzip.compress(b"x" * 100), {"content-encoding": "gzip"}, 100) == (
        b"x" * 100
    )
    with pytest.raises(Rejection) as caught:
        decode_content(gzip.compress(b"x" * 101), {"content-encoding": "gzip"}, 100)
    assert (caught.value.status, caught.value.error) == (413, "too_large")
    assert caught.value.message == (
        "the decompressed body is over 100 bytes, the limit (AGGREGATOR_MAX_BODY_BYTES)"
    )
    # Over the limit across members too.
    with pytest.raises(Rejection) as members:
        decode_content(gzip.compress(b"x" * 60) * 2, {"content-encoding": "gzip"}, 100)
    assert members.value.status == 413
    # The decoder applies max_body_bytes to the decompressed body.
    bomb = gzip.compress(json.dumps(event()).encode() + b" " * 5000)
    assert rejected(bomb, {**JSON, "content-encoding": "gzip"}).status == 413


def test_gzip_members_are_bounded_and_walked_across_feed_pieces() -> None:
    """4 MiB of empty members cost quadratic time (the rest of the body copied per member)."""
    gz = {"content-encoding": "gzip"}
    members = [gzip.compress(str(n).encode(), mtime=0) for n in range(MAX_GZIP_MEMBERS)]
    assert decode_content(b"".join(members), gz, 10_000) == b"".join(
        str(n).encode() for n in range(MAX_GZIP_MEMBERS)
    )
    with pytest.raises(Rejection) as caught:
        decode_content(b"".join(members) + members[0], gz, 10_000)
    assert (caught.value.status, caught.value.error) == (413, "too_large")
    assert caught.value.message == (
        f"the gzip body has more than {MAX_GZIP_MEMBERS} members, the limit; "
        "compress the body as one member"
    )
    # Members that straddle the pieces zlib is fed, in both directions.
    noise = random.Random(1).randbytes(3 * GZIP_FEED)  # incompressible: members of ~3 pieces
    body = gzip.compress(noise) + gzip.compress(b"tail") + gzip.compress(noise[:100])
    assert decode_content(body, gz, 10 * GZIP_FEED) == noise + b"tail" + noise[:100]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not gzip", "the body is not valid gzip: "),
        (gzip.compress(b"[1, 2, 3]", mtime=0)[:-6], "the gzip body is truncated"),
        (gzip.compress(b"[1]", mtime=0) + b"junk", "the body is not valid gzip: "),
    ],
    # Named, not shown: gzip's header holds the time, so the bytes (and an id made of them)
    # change every second, and mutmut could not find again the tests it listed by id.
    ids=["not-gzip", "truncated", "trailing-junk"],
)
def test_bad_gzip_is_400(body: bytes, message: str) -> None:
    with pytest.raises(Rejection) as caught:
        decode_content(body, {"content-encoding": "gzip"}, 4096)
    assert (caught.value.status, caught.value.error) == (400, "malformed")
    assert caught.value.message.startswith(message), caught.value.message


def test_bytes_after_whole_members_are_named_with_where_the_gzip_ended() -> None:
    """A body that is not gzip at all is not said to hold "0 bytes of gzip"; one whose whole
    members are followed by something else is, with the offset and the size of the rest."""
    gz = {"content-encoding": "gzip"}
    with pytest.raises(zlib.error) as expected:
        zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(b"not gzip")
    with pytest.raises(Rejection) as caught:
        decode_content(b"not gzip", gz, 4096)
    assert caught.value.message == f"the body is not valid gzip: {expected.value}"
    whole = gzip.compress(b"[1]") + gzip.compress(b"[2]")
    for rest in (b"junk", b"\x00" * 3, b"x" * 100):
        with pytest.raises(Rejection) as caught:
            decode_content(whole + rest, gz, 4096)
        assert (caught.value.status, caught.value.error) == (400, "malformed")
        assert caught.value.message.startswith(
            f"the body is not valid gzip: {len(whole)} bytes of gzip, then {len(rest)} bytes "
            "that are not another gzip member ("
        ), caught.value.message
        assert caught.value.message.endswith("); send the gzip data alone")


def test_a_zlib_stream_is_not_gzip() -> None:
    """Content-Encoding: gzip means the gzip format (RFC 1952), not zlib's (RFC 1950), which
    zlib would also take if asked to detect the header."""
    with pytest.raises(Rejection) as caught:
        decode_content(zlib.compress(b"[1, 2, 3]"), {"content-encoding": "gzip"}, 4096)
    assert (caught.value.status, caught.value.error) == (400, "malformed")


def test_a_gzip_bomb_is_refused_having_inflated_little_more_than_the_limit() -> None:
    """The limit bounds memory, not only the answer: zlib is asked for one byte more than the
    room left, so a bomb (here after a member that fills the limit exactly, in pieces) never
    inflates more than that."""
    limit = 1 << 20
    noise = random.Random(2).randbytes(limit)  # incompressible: inflated a piece at a time
    body = gzip.compress(noise, mtime=0) + gzip.compress(b"\x00" * (16 << 20), mtime=0)
    tracemalloc.start()
    try:
        with pytest.raises(Rejection) as caught:
            decode_content(body, {"content-encoding": "gzip"}, limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413
    assert peak < 2 * limit, peak


def test_other_encodings_are_415_naming_the_one_to_send() -> None:
    with pytest.raises(Rejection) as caught:
        decode_content(b"x", {"content-encoding": "br"}, 4096)
    assert (caught.value.status, caught.value.error) == (415, "unsupported_media_type")
    assert caught.value.message == (
        "Content-Encoding 'br' is not accepted; send 'Content-Encoding: gzip' or no "
        "Content-Encoding"
    )


def test_the_slow_path_checks_payload_size_and_timestamp_range_too() -> None:
    """A type error anywhere sends the whole body through the field-by-field path."""
    typed_wrong = {**event(event_id="x"), "topic": 5}
    big = json.dumps(event(payload={"k": "x" * 60}), separators=(",", ":")).encode()
    no_payload = {k: v for k, v in event(event_id="n").items() if k != "payload"}
    late = json.dumps(event(timestamp="9999-12-31T23:59:59-01:00")).encode()
    body = b"[" + b",".join([big, json.dumps(no_payload).encode(), late]) + b","
    body += json.dumps(typed_wrong).encode() + b"]"
    assert rejected(body).details == [
        Detail(0, "payload", "is 68 bytes; the limit is 64 (AGGREGATOR_MAX_PAYLOAD_BYTES)"),
        Detail(2, "timestamp", "is out of range once converted to UTC"),
        Detail(3, "topic", f"{rule_message('topic')} (Expected `str`, got `int`)"),
    ]


def test_the_slow_path_takes_a_payload_of_exactly_the_limit() -> None:
    exact = json.dumps(event(payload={"k": "x" * 56}), separators=(",", ":")).encode()
    typed_wrong = json.dumps({**event(event_id="x"), "topic": 5}).encode()
    assert rejected(b"[" + exact + b"," + typed_wrong + b"]").details == [
        Detail(1, "topic", f"{rule_message('topic')} (Expected `str`, got `int`)"),
    ]


def test_a_field_given_twice_must_be_of_its_type_both_times() -> None:
    """A JSON object may repeat a key; a dict keeps the last copy, the typed decode checks each
    copy's type. The first copy's problem is named, alone or in a batch with a valid item."""
    rest = json.dumps(event())[1:-1].removeprefix('"topic": "t", ')
    twice = b'{"topic": 1, "topic": "a", ' + rest.encode() + b"}"
    why = (
        "Expected `str`, got `int`; a field given more than once must be of its type each time "
        "(the last copy is the one kept and checked)"
    )
    assert rejected(b"[" + twice + b"]").details == [Detail(0, "topic", why)]
    valid = json.dumps(event(event_id="ok")).encode()
    assert rejected(b"[" + valid + b"," + twice + b"]").details == [Detail(1, "topic", why)]


def test_offsets_convert_to_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert decode(event(timestamp="2026-11-21T10:00:00+02:00"))[0].timestamp == (
            "2026-11-21T08:00:00Z"
        )
    finally:
        monkeypatch.undo()
        time.tzset()


# --- the mutation campaign's survivors (issue 21) ------------------------------------------


BODY = "the body is not valid JSON: "


@pytest.mark.parametrize(
    ("body", "headers", "start", "byte"),
    [
        (b"{nope", JSON, BODY, 1),
        (b'{"events": [1,]}', JSON, BODY, 14),
        (b"42 43", JSON, BODY, 4),
        (b"[1,]", JSON, BODY, 3),
        (b"{oops}", NDJSON, "line 1 is not valid JSON: ", 1),
        # The typed decode stops at the wrong type first; the line is still named broken.
        (b'{"topic": 5, "x": [}', NDJSON, "line 1 is not valid JSON: ", 19),
    ],
)
def test_malformed_json_names_the_byte_where_it_breaks(
    body: bytes, headers: dict[str, str], start: str, byte: int
) -> None:
    """The client is told where its body stops being JSON, not only that it does."""
    refusal = rejected(body, headers)
    assert (refusal.status, refusal.error) == (400, "malformed")
    assert refusal.message.startswith(start), refusal.message
    assert refusal.message.endswith(f" (byte {byte})"), refusal.message


def test_problems_are_listed_in_event_order_whichever_check_found_them() -> None:
    """The offset check runs after the others: its problem of event 0 still comes first."""
    body = [event(event_id="a", timestamp="2026-11-21T10:00:00+0700"), event(topic="a b")]
    refusal = rejected(body)
    assert [(d.index, d.field) for d in refusal.details or []] == [(0, "timestamp"), (1, "topic")]
    assert refusal.message.startswith("2 problems; first: event 0 field 'timestamp' "), (
        refusal.message
    )


@pytest.mark.parametrize(
    "body",
    [
        # Whitespace before the object, alone and wrapped; the wrapper with the event second.
        b'  \n{"topic":"t","event_id":"e","timestamp":"2026-11-21T10:00:00+0700","source":"s"}',
        b' {"events": [{"topic":"t","event_id":"e","timestamp":"2026-11-21T10:00:00+0700",'
        b'"source":"s"}]}',
    ],
)
def test_an_offset_without_a_colon_is_found_in_any_shape_of_body(body: bytes) -> None:
    [detail] = rejected(body).details or []
    assert (detail.index, detail.field) == (0, "timestamp")
    assert "the offset needs a colon, as in +07:00" in detail.message


def test_an_offset_without_a_colon_is_found_in_a_wrapped_batch_at_its_index() -> None:
    good = event(event_id="good")
    bad = event(event_id="bad", timestamp="2026-11-21T10:00:00.5-0130")
    details = rejected({"events": [good, bad]}).details or []
    assert [(d.index, d.field) for d in details] == [(1, "timestamp")]


def test_the_slow_path_names_an_offset_without_a_colon_and_checks_the_fields_after_it() -> None:
    """Another event's type error sends the body field by field: the offset is still checked
    there, and a problem of a later field of the same event is named too."""
    colonless = event(event_id="a", timestamp="2026-11-21T10:00:00+0700", source="")
    typed_wrong = event(event_id="b", topic=5)
    details = rejected([colonless, typed_wrong]).details
    assert details == [
        Detail(
            0,
            "timestamp",
            f"{rule_message('timestamp')} (the offset needs a colon, as in +07:00; "
            "got '2026-11-21T10:00:00+0700')",
        ),
        Detail(0, "source", f"{rule_message('source')} (got an empty string)"),
        Detail(1, "topic", f"{rule_message('topic')} (Expected `str`, got `int`)"),
    ]


def test_text_of_exactly_255_characters_passes_the_slow_path_and_the_character_checks() -> None:
    longest = "x" * 255
    full = event(topic=longest, event_id=longest, source=longest)
    typed_wrong = event(event_id="b", topic=5)
    assert rejected([full, typed_wrong]).details == [
        Detail(1, "topic", f"{rule_message('topic')} (Expected `str`, got `int`)")
    ]
    # A topic with a space sends the event through the per-character check of every field.
    spaced = rejected([event(topic="a b", event_id=longest, source=longest)])
    assert [(d.index, d.field) for d in spaced.details or []] == [(0, "topic")]


def test_only_the_last_copy_of_a_field_given_twice_is_checked_against_its_rule() -> None:
    """The contract's rule for a repeated key: each copy of the field's type, the last kept and
    checked. A first timestamp without the offset's colon passes when the last is valid; as
    the last copy it is refused."""
    colonless, utc = b'"2026-11-21T10:00:00+0700"', b'"2026-11-21T10:00:00Z"'
    head = b'{"topic": "t", "event_id": "e1", "source": "s", "timestamp": '
    [record] = decode(b"[" + head + colonless + b', "timestamp": ' + utc + b"}]")
    assert record.timestamp.startswith("2026-11-21T10:00:00")
    [detail] = rejected(b"[" + head + utc + b', "timestamp": ' + colonless + b"}]").details
    assert detail.field == "timestamp" and "colon" in detail.message
