"""The syslog decoder and the RFC 6587 framer, on the bytes real senders put on the wire
(util-linux logger 2.38.1 and rsyslog 8.2302 omfwd, captured in /work/research/SHIPPERS.md §4)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.decoders.syslog import DEFAULT_TOPIC, decode_syslog, topic
from aggregator.decoders.syslog_framing import Framer, Problem, strip_frame
from aggregator.messages import EventRecord, Limits, Rejection

LIMITS = Limits(max_body_bytes=1 << 20, max_batch_events=1000, max_payload_bytes=4096)
NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
TQ = '[timeQuality tzKnown="1" isSynced="0"]'
LOGGER_5424 = f"<156>1 2026-11-30T07:48:44.146619+00:00 vm myapp - - {TQ} hello 5424 tcp"
LOGGER_3164 = "<156>Nov 30 07:48:45 vm myapp: hello 3164 tcp"
RSYSLOG_TRADITIONAL = "<156>Nov 30 07:49:03 vm myapp fwd one"


def decode(message: str | bytes, peer: str = "10.0.0.9", now: datetime = NOW) -> EventRecord:
    raw = message.encode() if isinstance(message, str) else message
    return decode_syslog(raw, peer, now, LIMITS)


def payload(record: EventRecord) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(record.payload)
    return result


def test_logger_rfc5424_maps_as_the_table_says() -> None:
    record = decode(LOGGER_5424)
    assert (record.topic, record.source, record.timestamp) == (
        "myapp",
        "vm",
        "2026-11-30T07:48:44.146619Z",
    )
    assert payload(record) == {
        "format": "rfc5424",
        "priority": 156,
        "facility": "local3",
        "severity": "warning",
        "hostname": "vm",
        "app_name": "myapp",
        "procid": None,
        "msgid": None,
        "structured_data": {"timeQuality": {"tzKnown": "1", "isSynced": "0"}},
        "message": "hello 5424 tcp",
    }


def test_structured_data_msgid_procid_and_escapes() -> None:
    raw = (
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 4242 ID47 "
        '[exampleSDID@32473 iut="3" eventSource="Appl\\"ication" eventID="1011"]'
        '[examplePriority@32473 class="high" x="a\\]b\\\\c" x="2"] \ufeffAn application event'
    )
    record = decode(raw)
    fields = payload(record)
    assert (fields["facility"], fields["severity"], fields["procid"], fields["msgid"]) == (
        "local4",
        "notice",
        "4242",
        "ID47",
    )
    assert fields["structured_data"] == {
        "exampleSDID@32473": {"iut": "3", "eventSource": 'Appl"ication', "eventID": "1011"},
        "examplePriority@32473": {"class": "high", "x": ["a]b\\c", "2"]},
    }
    assert fields["message"] == "An application event"  # the BOM is not part of the text
    assert record.timestamp == "2003-10-11T22:14:15.003000Z"


def test_nil_fields_fall_back_to_receipt_time_peer_and_default_topic() -> None:
    record = decode("<13>1 - - - - - -")
    assert (record.topic, record.source, record.timestamp) == (
        DEFAULT_TOPIC,
        "10.0.0.9",
        "2026-11-30T08:00:00Z",
    )
    assert payload(record)["message"] == ""
    assert payload(decode("<13>1 - - myapp - - - bare"))["message"] == "bare"


def test_an_offset_is_converted_to_utc() -> None:
    record = decode("<13>1 2003-08-24T05:14:15.000003-07:00 h app - - - m")
    assert record.timestamp == "2003-08-24T12:14:15.000003Z"


def test_logger_rfc3164_and_rsyslog_traditional_forwarding() -> None:
    for raw, message in ((LOGGER_3164, "hello 3164 tcp"), (RSYSLOG_TRADITIONAL, "fwd one")):
        record = decode(raw)
        assert (record.topic, record.source) == ("myapp", "vm")
        assert payload(record)["format"] == "rfc3164"
        assert payload(record)["message"] == message
    assert decode(LOGGER_3164).timestamp == "2026-11-30T07:48:45Z"


def test_rfc3164_without_hostname_with_pid_and_with_an_rfc3339_stamp() -> None:
    local = decode("<13>Nov  3 07:48:45 sshd[811]: Accepted key")
    assert (local.topic, local.source, local.timestamp) == (
        "sshd",
        "10.0.0.9",
        "2026-11-03T07:48:45Z",
    )
    assert payload(local)["procid"] == "811"
    assert payload(local)["message"] == "Accepted key"
    iso = decode("<13>2026-11-30T07:49:03.5+01:00 host cron[9]: job")
    assert (iso.topic, iso.source, iso.timestamp) == ("cron", "host", "2026-11-30T06:49:03.500000Z")
    bare = decode("<13>no stamp here")
    assert (bare.topic, bare.timestamp, payload(bare)["message"]) == (
        "no",
        "2026-11-30T08:00:00Z",
        "stamp here",
    )


@pytest.mark.parametrize(
    ("raw", "hostname", "message"),
    [
        # A sequence number, not a program (Cisco IOS): each would have been a topic.
        ("<189>123: *Mar  1 18:46:11: %SYS-5-CONFIG_I: Configured", None, None),
        ("<13>Nov 30 07:48:45 vm 12345: numbered", "vm", None),
        ("<13>Nov 30 07:48:45 vm -- MARK --", "vm", None),  # no TAG at all
        ("<13>Nov 30 07:48:45 -- MARK --", None, None),  # and no HOSTNAME either
        # No stamp, and text that starts like one: was rejected as a bad RFC 3339 stamp.
        ("<13>2024-01-01 backup done", None, None),
        ("<13>1234-5678 job finished", None, None),
        # "1 " is RFC 5424's version only when a "-" or a date follows: was rejected.
        ("<13>1 file copied", None, None),
    ],
)
def test_a_tag_without_a_letter_is_no_tag_and_the_text_is_kept_whole(
    raw: str, hostname: str | None, message: str | None
) -> None:
    record = decode(raw)
    fields = payload(record)
    text = raw.split(">", 1)[1]
    expected = message or (text if text[:1].isdigit() else text[16:])
    if hostname:
        expected = expected.removeprefix(hostname + " ")
    assert (record.topic, fields["app_name"], fields["procid"]) == (DEFAULT_TOPIC, None, None)
    assert (fields["format"], fields["hostname"], fields["message"]) == (
        "rfc3164",
        hostname,
        expected,
    )


def test_a_tag_of_digits_with_a_pid_is_still_a_tag() -> None:
    fields = payload(decode("<13>Nov 30 07:48:45 vm 4711[9]: numbered program"))
    assert (fields["app_name"], fields["procid"], fields["message"]) == (
        "4711",
        "9",
        "numbered program",
    )


@pytest.mark.parametrize(
    "raw", ["<13>1 2026-13-01T00:00:00Z h a - - - x", "<13>1 - h a - - x", "<13>1 - h a"]
)
def test_a_broken_rfc5424_header_is_still_malformed(raw: str) -> None:
    with pytest.raises(Rejection) as caught:
        decode(raw)
    assert caught.value.error == "malformed"


@pytest.mark.parametrize(
    ("stamp", "received", "expected"),
    [
        ("Dec 31 23:59:59", datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC), "2026-12-31T23:59:59Z"),
        ("Jan  1 00:00:01", datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "2027-01-01T00:00:01Z"),
        ("Feb 29 12:00:00", datetime(2028, 3, 1, tzinfo=UTC), "2028-02-29T12:00:00Z"),
        ("Feb 29 12:00:00", datetime(2025, 3, 1, tzinfo=UTC), "2024-02-29T12:00:00Z"),
    ],
)
def test_an_rfc3164_stamp_is_utc_in_the_year_nearest_to_receipt(
    stamp: str, received: datetime, expected: str
) -> None:
    assert decode(f"<13>{stamp} h app: m", now=received).timestamp == expected


@pytest.mark.parametrize(
    ("app_name", "expected"),
    [
        ("my\x01app", "my_app"),
        ("tab\there", "tab_here"),
        ("nbsp\u00a0x", "nbsp_x"),
        ("a" * 300, "a" * 255),
        ("", DEFAULT_TOPIC),
        (None, DEFAULT_TOPIC),
        ("ünïcødé/ok.x", "ünïcødé/ok.x"),
    ],
)
def test_an_app_name_that_breaks_the_topic_rule_is_sanitised(
    app_name: str | None, expected: str
) -> None:
    assert topic(app_name) == expected


def test_sanitised_app_names_arrive_as_valid_topics() -> None:
    assert decode("<13>1 - h bad\x7fname - - - m").topic == "bad_name"
    assert decode(b"<13>1 - h \xff\xfe - - - m").topic == "\ufffd\ufffd"  # not UTF-8: U+FFFD
    long = decode("<13>1 - " + "h" * 300 + " app - - - m")
    assert long.source == "h" * 255 and payload(long)["hostname"] == "h" * 300


def test_event_id_is_a_hash_of_the_bytes() -> None:
    first, again = decode(LOGGER_5424), decode(LOGGER_5424, peer="other", now=datetime.now(UTC))
    assert first.event_id == again.event_id and len(first.event_id) == 32
    assert decode(LOGGER_5424 + " ").event_id != first.event_id
    assert decode(b"<13>1 - h a - - - \xe9").event_id != decode(b"<13>1 - h a - - - \xe8").event_id


def test_without_hostname_the_peer_is_part_of_the_id() -> None:
    bare = "<13>Nov 30 07:48:45 sshd[1]: the same line"
    assert decode(bare, peer="10.0.0.1").event_id != decode(bare, peer="10.0.0.2").event_id
    assert decode(bare, peer="10.0.0.1").event_id == decode(bare, peer="10.0.0.1").event_id
    named = "<13>Nov 30 07:48:45 host sshd[1]: the same line"  # relayed: one event
    assert decode(named, peer="10.0.0.1").event_id == decode(named, peer="10.0.0.2").event_id


PRIORITY = "it must start with a priority such as <13>"
HEADER = "an RFC 5424 header has six fields after the version"
SD_START = "STRUCTURED-DATA must be '-' or start with '['"
SD_END = "an SD-ELEMENT must end with ']'"
SD_NAME = "an SD-ID or PARAM-NAME is empty or too long"
LONG = "2026-13-30T07:48:44.123456789012345678901Z"  # the message quotes its first 40 characters


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", PRIORITY),
        (b"hello", PRIORITY),
        (b"<192>1 - - - - - - m", "the priority <192> is over 191"),
        (b"<x>1 - - - - - - m", PRIORITY),
        (b"\x00\xff\xfe garbage", PRIORITY),
        (b"<13>1 - h app", HEADER),
        (b"<13>1 - h  app - - - m", HEADER),  # two spaces: an empty field
        (
            b"<13>1 yesterday h app - - - m",
            "the timestamp 'yesterday' is not RFC 3339 with an offset",
        ),
        (
            b"<13>1 2026-11-30T07:48:44 h app - - - m",
            "the timestamp '2026-11-30T07:48:44' is not RFC 3339 with an offset",
        ),
        (
            b"<13>1 2026-11-30T07:48:4Z h app - - - m",
            "the timestamp '2026-11-30T07:48:4Z' is not RFC 3339 with an offset",
        ),
        (
            b"<13>1 2026-11-30X07:48:44Z h app - - - m",
            "the timestamp '2026-11-30X07:48:44Z' is not RFC 3339 with an offset",
        ),
        (
            b"<13>1 2026-11-30T07:48:44X h app - - - m",
            "the timestamp '2026-11-30T07:48:44X' is not RFC 3339 with an offset",
        ),
        (
            b"<13>1 2026-11-30T07-48-44Z h app - - - m",
            "the timestamp '2026-11-30T07-48-44Z' is not RFC 3339 with an offset",
        ),
        (
            b"<13>1 2026-11-30T07:48:44X01:00 h app - - - m",
            "the timestamp '2026-11-30T07:48:44X01:00' is not RFC 3339 with an offset",
        ),
        (
            b"<13>1 " + b"y" * 45 + b" h app - - - m",
            f"the timestamp '{'y' * 40}' is not RFC 3339 with an offset",
        ),
        (
            b"<13>1 2026-13-30T07:48:44Z h app - - - m",
            "the timestamp '2026-13-30T07:48:44Z' is not a valid date-time",
        ),
        (
            f"<13>1 {LONG} h app - - - m".encode(),
            f"the timestamp '{LONG[:40]}' is not a valid date-time",
        ),
        (b"<13>1 - h app - - [id x=1] m", "the SD-PARAM 'x' must be followed by =\"value\""),
        (b'<13>1 - h app - - [id x="1 m', "a PARAM-VALUE has no closing quote"),
        (b'<13>1 - h app - - [id x="1" m', "the SD-PARAM 'm' must be followed by =\"value\""),
        (
            b'<13>1 - h app - - [id x="1"]m',
            "STRUCTURED-DATA must be followed by a space and the message",
        ),
        (b'<13>1 - h app - - [id x="1"x] m', SD_END),
        (b"<13>1 - h app - - [" + b"a" * 33 + b"] m", SD_END),  # an SD-ID is at most 32
        (b'<13>1 - h app - - [ x="1"] m', SD_NAME),
        (b'<13>1 - h app - - [id ="1"] m', SD_NAME),
        (b"<13>1 - h app - - {} m", SD_START),
        (b"<13>1 - h app - - ", SD_START),  # the sixth field is there, and empty
        (b"<13>Nov 31 07:48:45 h app: m", "the timestamp 'Nov 31 07:48:45' is not a date"),
        (
            b"<13>Nov 30 7:48:450 h app: m",
            "the timestamp 'Nov 30 7:48:450' is not 'Mmm dd hh:mm:ss'",
        ),
        (
            b"<13>Nov 30X07:48:45 h app: m",
            "the timestamp 'Nov 30X07:48:45' is not 'Mmm dd hh:mm:ss'",
        ),
    ],
)
def test_malformed_messages_are_rejected_naming_the_rule(raw: bytes, why: str) -> None:
    with pytest.raises(Rejection) as caught:
        decode(raw)
    assert (caught.value.status, caught.value.error) == (400, "malformed")
    assert caught.value.message == f"not a syslog message: {why}"


def test_rfc3339_in_lower_case_an_sd_name_of_32_and_sd_at_the_end() -> None:
    lower = decode("<13>1 2026-11-30t07:48:44z h app - - - m")  # RFC 3339 allows t and z
    assert lower.timestamp == "2026-11-30T07:48:44Z"
    longest = payload(decode("<13>1 - h app - - [" + "a" * 32 + ' X="1"] m'))
    assert longest["structured_data"] == {"a" * 32: {"X": "1"}}
    bare = payload(decode('<13>1 - h app - - [id x="1"]'))  # no MSG after STRUCTURED-DATA
    assert (bare["structured_data"], bare["message"]) == ({"id": {"x": "1"}}, "")
    thrice = payload(decode('<13>1 - h app - - [id x="1" x="2" x="3"] m'))
    assert thrice["structured_data"] == {"id": {"x": ["1", "2", "3"]}}


def test_rfc3164_fields_with_no_tag_pid_colon_or_space_where_expected() -> None:
    def fields(message: str) -> tuple[str, str | None, str | None, str]:
        got = payload(decode(message))
        return got["app_name"], got["hostname"], got["procid"], got["message"]

    assert payload(decode("<13>ntp synced")) == {
        "format": "rfc3164",
        "priority": 13,
        "facility": "user",
        "severity": "notice",
        "hostname": None,
        "app_name": "ntp",
        "procid": None,
        "msgid": None,
        "structured_data": None,
        "message": "synced",
    }
    assert fields("<13>Nov 30 07:48:45 sshd: hello") == ("sshd", None, None, "hello")
    assert fields("<13>Nov 30 07:48:45 sshd[811] fwd") == ("sshd", None, "811", "fwd")
    assert fields("<13>2026 was a year") == (
        None,
        None,
        None,
        "2026 was a year",
    )  # no letter: no TAG
    assert fields("<13>justatag") == ("justatag", None, None, "")
    assert fields("<13>Xorg: started") == ("Xorg", None, None, "started")
    assert fields("<13>odd]tag[7]: m") == ("odd]tag", None, "7", "m")
    assert fields("<13>app[7]: value [x]") == ("app", None, "7", "value [x]")
    assert fields("<13>app[7]msg") == ("app", None, "7", "msg")
    assert fields("<13>app:msg") == ("app", None, None, "msg")
    assert fields("<13>app msg") == ("app", None, None, "msg")
    assert fields("<13>[]: m") == (None, None, "", "m")
    assert fields("<13>: hello") == (None, None, None, "hello")
    assert decode("<13>: hello").topic == DEFAULT_TOPIC


def test_an_rfc3164_stamp_ends_the_message_or_is_followed_by_a_space() -> None:
    alone = decode("<13>Nov 30 07:48:45")
    assert (alone.timestamp, alone.topic, payload(alone)["message"]) == (
        "2026-11-30T07:48:45Z",
        DEFAULT_TOPIC,
        "",
    )
    # Not 'Mmm dd hh:mm:ss ': no stamp; the time of receipt, and the text is the message.
    glued = decode("<13>Nov 30 07:48:45.5 h app: m")
    assert (glued.timestamp, glued.topic) == ("2026-11-30T08:00:00Z", "Nov")
    assert payload(glued)["message"] == "30 07:48:45.5 h app: m"


def test_an_app_name_with_a_space_is_sanitised_too() -> None:
    assert topic("my app") == "my_app"


def test_a_payload_over_the_limit_is_too_large() -> None:
    with pytest.raises(Rejection) as caught:
        decode("<13>1 - h app - - - " + "x" * 5000)
    assert (caught.value.status, caught.value.error) == (413, "too_large")
    assert "AGGREGATOR_MAX_PAYLOAD_BYTES" in caught.value.message
    with pytest.raises(Rejection):  # escaping can push a message under the limit over it
        decode("<13>1 - h app - - - " + "\x01" * 800)


# --- framing ---------------------------------------------------------------------------------


def frames(*chunks: bytes, max_bytes: int = 4096, end: bool = True) -> list[bytes | Problem]:
    framer = Framer(max_bytes)
    out = [frame for chunk in chunks for frame in framer.feed(chunk)]
    return out + framer.end() if end else out


def test_octet_counting_logger_and_rsyslog_and_newline_framing_on_one_stream() -> None:
    logger = f"{len(LOGGER_5424)} {LOGGER_5424}".encode()  # logger --octet-count: no LF
    rsyslog = f"{len(LOGGER_5424) + 1} {LOGGER_5424}\n".encode()  # omfwd counts its LF
    newline = f"{LOGGER_5424}\n".encode()
    crlf = f"{LOGGER_3164}\r\n".encode()
    assert frames(logger + rsyslog + newline + b"\n\n\x00" + crlf) == [
        LOGGER_5424.encode(),
        LOGGER_5424.encode(),
        LOGGER_5424.encode(),
        LOGGER_3164.encode(),
    ]


def test_frames_do_not_depend_on_how_the_stream_is_cut() -> None:
    stream = b"12 <13>1 - - a\n<13>x y\n5 <13>z" + b"7 <13>a\nb" + b"<13>tail"
    whole = frames(stream)
    assert frames(*(stream[i : i + 1] for i in range(len(stream)))) == whole
    assert whole == [b"<13>1 - - a", b"<13>x y", b"<13>z", b"<13>a\nb", b"<13>tail"]


def test_oversized_frames_are_skipped_unbuffered_and_reported_once() -> None:
    framer = Framer(100)
    assert framer.feed(b"999999999 " + b"x" * 5000) == [Problem.TOO_LARGE]
    assert framer.feed(b"x" * 5000) == [] and framer.partial
    assert frames(b"<13>" + b"y" * 300 + b"\n<13>ok\n", max_bytes=100) == [
        Problem.TOO_LARGE,
        b"<13>ok",
    ]
    chunked = Framer(100)
    assert chunked.feed(b"<13>" + b"y" * 150) == [Problem.TOO_LARGE]
    assert chunked.feed(b"y" * 10_000) == []
    assert chunked.feed(b"y\n<13>next\n") == [b"<13>next"]
    assert frames(b"200 " + b"z" * 200 + b"8 <13>next", max_bytes=100) == [
        Problem.TOO_LARGE,
        b"<13>next",
    ]


def test_the_end_of_the_stream_truncates_a_counted_frame_and_ends_a_line() -> None:
    assert frames(b"50 <13>1 - - short") == [Problem.TRUNCATED]
    assert frames(b"<13>no newline") == [b"<13>no newline"]
    assert frames(b"12345") == [b"12345"]  # digits and no space: not a count
    assert frames(b"0 <13>x\n") == [b"0 <13>x"]  # a count never starts with 0
    assert frames(b"1234567890 x\n") == [b"1234567890 x"]  # ten digits: not a count
    cut = Framer(100)
    cut.feed(b"30 <13>1 - -")
    assert cut.cut() == [Problem.TRUNCATED] and not cut.partial


def test_strip_frame_drops_one_lf_and_its_cr() -> None:
    assert strip_frame(b"<13>m\r\n") == b"<13>m"
    assert strip_frame(b"<13>m\n\n") == b"<13>m\n"
    assert strip_frame(b"<13>m\x00") == b"<13>m"  # a NUL TRAILER, as over UDP


def test_a_nul_ends_a_line_but_not_a_counted_frame() -> None:
    """RFC 6587 3.4.2: some senders end each message with a NUL and no LF; they were read as
    one message up to the next LF (or the size limit)."""
    assert frames(b"<13>one\x00<13>two\x00\n<13>three\r\x00") == [
        b"<13>one",
        b"<13>two",
        b"<13>three",
    ]
    assert frames(b"8 <13>a\x00b\n") == [b"<13>a\x00b"]  # counted: the NUL is the message's
    assert frames(b"<13>" + b"y" * 150 + b"\x00<13>next\x00", max_bytes=100) == [
        Problem.TOO_LARGE,
        b"<13>next",
    ]


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=30))
def test_any_bytes_in_any_chunks_frame_alike_within_bounded_memory(
    stream: bytes, cuts: list[int]
) -> None:
    whole = frames(stream, max_bytes=64)
    framer = Framer(64)
    out: list[bytes | Problem] = []
    rest = stream
    for size in [*cuts, len(stream)]:
        out += framer.feed(rest[:size])
        rest = rest[size:]
        assert len(framer._buffer) <= 64 + 64  # the limit, plus one chunk not yet framed
    assert out + framer.end() == whole
    for frame in whole:
        if isinstance(frame, bytes):
            with_limit = Limits(1 << 20, 1000, 1 << 20)
            try:
                decode_syslog(frame, "peer", NOW, with_limit)
            except Rejection as rejection:  # the only way a decoder may refuse
                assert rejection.error in ("malformed", "too_large")


def test_a_cut_truncates_only_a_frame_begun() -> None:
    idle = Framer(100)
    assert idle.cut() == []  # nothing arrived
    whole = Framer(100)
    assert whole.feed(b"<13>a\n") == [b"<13>a"]
    assert whole.cut() == []  # every frame complete
    skipping = Framer(10)
    assert skipping.feed(b"<13>" + b"y" * 20) == [Problem.TOO_LARGE]
    assert skipping.cut() == []  # reported when it started


def test_frames_of_exactly_the_limit_pass_and_an_oversized_one_is_skipped_whole() -> None:
    assert frames(b"10 " + b"x" * 10, max_bytes=10) == [b"x" * 10]  # counted
    assert frames(b"<13>abcdef\n", max_bytes=10) == [b"<13>abcdef"]  # a line
    waiting = Framer(10)
    assert waiting.feed(b"<13>abcdef") == [] and waiting.partial  # all of it, no LF yet
    assert waiting.feed(b"\n") == [b"<13>abcdef"]
    after = Framer(10)  # a line begun after a whole frame in the same chunk
    assert after.feed(b"<13>abcde\n<13>x") == [b"<13>abcde"]
    assert after.feed(b"y\n") == [b"<13>xy"]
    # An oversized counted frame whose bytes come in three chunks, after a frame.
    counted = Framer(10)
    assert counted.feed(b"<13>a\n20 " + b"x" * 5) == [b"<13>a", Problem.TOO_LARGE]
    assert counted.feed(b"x" * 10) == [] and counted.partial
    assert counted.feed(b"x" * 5 + b"<13>next\n") == [b"<13>next"]
    # An oversized line whose LF starts the next chunk.
    line = Framer(10)
    assert line.feed(b"<13>" + b"y" * 20) == [Problem.TOO_LARGE]
    assert line.feed(b"\n<13>next\n") == [b"<13>next"]
    # A count of nine digits is a count (here of a frame too large); ten are not.
    assert frames(b"123456789 <13>x\n", max_bytes=100) == [Problem.TOO_LARGE]


def test_a_new_framer_and_one_at_the_end_of_its_stream_are_inside_no_frame() -> None:
    assert not Framer(10).partial
    for stream in (b"", b"<13>x", b"30 <13>", b"<13>" + b"y" * 20, b"99 " + b"z" * 20):
        framer = Framer(10)
        framer.feed(stream)
        framer.end()
        assert not framer.partial


def test_the_priority_is_one_to_three_digits_in_angle_brackets_up_to_191() -> None:
    top = payload(decode("<191>1 - - - - - - m"))
    assert (top["priority"], top["facility"], top["severity"]) == (191, "local7", "debug")
    assert payload(decode("<13>>x"))["app_name"] == ">x"  # the first '>' closes it
    for raw in (b"<1234>1 - - - - - - m", b"x13>1 - - - - - - m"):
        with pytest.raises(Rejection) as caught:
            decode(raw)
        assert caught.value.message == f"not a syslog message: {PRIORITY}"


def test_a_payload_of_exactly_the_limit_passes() -> None:
    message = "<13>1 - h app - - - " + "x" * 100
    size = len(decode(message).payload.encode())
    exact = Limits(max_body_bytes=1 << 20, max_batch_events=1000, max_payload_bytes=size)
    assert decode_syslog(message.encode(), "peer", NOW, exact).topic == "app"
    one_less = Limits(max_body_bytes=1 << 20, max_batch_events=1000, max_payload_bytes=size - 1)
    with pytest.raises(Rejection) as caught:
        decode_syslog(message.encode(), "peer", NOW, one_less)
    assert (caught.value.status, caught.value.error) == (413, "too_large")


def test_truncated_says_whether_the_stream_ended_or_was_cut_inside_a_frame() -> None:
    """The TCP door resets, rather than closes, a connection whose ``truncated`` is true
    (``int(framer.truncated)``): it is a bool, false until a frame is cut, true after."""
    whole = Framer(100)
    assert whole.truncated is False
    assert whole.feed(b"<13>a\n5 <13>b") == [b"<13>a", b"<13>b"]
    assert whole.end() == [] and whole.truncated is False
    ended = Framer(100)
    ended.feed(b"50 <13>1 - - short")
    assert ended.end() == [Problem.TRUNCATED] and ended.truncated is True
    idle = Framer(100)
    assert idle.cut() == [] and idle.truncated is False
    cut = Framer(100)
    cut.feed(b"<13>half a line")
    assert cut.cut() == [Problem.TRUNCATED] and cut.truncated is True
    assert cut.cut() == [] and cut.truncated is True  # a later cut does not undo it


@pytest.mark.parametrize("stop", ["end", "cut"])
def test_after_end_or_cut_a_framer_frames_a_new_stream_like_a_new_one(stop: str) -> None:
    framer = Framer(10)
    framer.feed(b"<13>ab")  # a line begun, searched for its end, not ended
    framer.end() if stop == "end" else framer.cut()
    assert not framer.partial
    assert framer.feed(b"<13>xy") == []
    assert framer.feed(b"z\n") == [b"<13>xyz"]


class _SearchCountingBuffer(bytearray):
    """A framer's buffer that counts the bytes its searches (``find``) look at."""

    searched = 0

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        first, last, _ = slice(start, end).indices(len(self))
        self.searched += max(0, last - first)
        return super().find(sub, start, end)


@pytest.mark.parametrize("before", [b"", b"<13>a\n"], ids=["alone", "after-a-frame"])
def test_a_long_line_fed_a_byte_at_a_time_is_searched_once(before: bytes) -> None:
    """A line arriving a byte at a time is searched for its end (LF or NUL) once, not once per
    byte: quadratic, a 64 KiB line cost 0.26 s of CPU. Also for a line begun after a frame."""
    size = 20_000
    framer = Framer(size)
    buffer = framer._buffer = _SearchCountingBuffer()
    line = b"<13>" + b"x" * (size - 4)
    assert framer.feed(before + line[:1]) == ([b"<13>a"] if before else [])
    for at in range(1, size):
        assert framer.feed(line[at : at + 1]) == []
    assert framer.feed(b"\n") == [line]
    assert buffer.searched <= 2 * (len(before) + size + 1)  # each byte: for an LF, for a NUL


def test_a_line_longer_than_the_limit_fed_a_byte_at_a_time_is_reported_once_unbuffered() -> None:
    framer = Framer(100)
    out = framer.feed(b"<13>")
    for _ in range(10_000):
        out += framer.feed(b"y")
        assert len(framer._buffer) <= 100
    assert out == [Problem.TOO_LARGE]
    assert framer.feed(b"\n<13>next\n") == [b"<13>next"]


def test_a_partial_line_then_a_chunk_of_many_lines() -> None:
    """The rest of a line begun in one chunk is searched from where the search stopped, not
    from further on: the first LF of the next chunk ends it."""
    framer = Framer(100)
    assert framer.feed(b"<13>x") == []
    assert framer.feed(b"y\n" + b"<13>z\n" * 5) == [b"<13>xy"] + [b"<13>z"] * 5


def test_a_skipped_line_ends_at_an_lf_or_a_nul_that_starts_the_next_chunk() -> None:
    """An oversized line is skipped up to its LF or NUL, whichever comes first, even as the
    first byte of a chunk; the frames after it are delivered."""
    for trailer, rest in (
        (b"\n", b"<13>a\x00<13>b\n"),
        (b"\x00", b"<13>a\n<13>b\x00"),
        (b"\x00", b"<13>a\x00<13>b\x00"),
    ):
        framer = Framer(10)
        assert framer.feed(b"<13>" + b"y" * 20) == [Problem.TOO_LARGE]
        assert framer.feed(trailer + rest) == [b"<13>a", b"<13>b"], (trailer, rest)


# Every kind of frame, and what separates them: counted (logger, rsyslog), LF, CRLF and NUL
# lines, a line that starts with a blank or with "0 ", oversized counted and newline frames (the
# limit is 16), digits that are no count, and a last line without its LF.
STREAM = (
    b"5 <13>a"
    + b"6 <13>b\n"
    + b"\n\r\x00"
    + b"<13>c\r\n"
    + b"<13>d\x00"
    + b" <13>e\n"
    + b"0 <13>f\n"
    + b"40 "
    + b"z" * 40
    + b"<13>"
    + b"y" * 30
    + b"\x00<13>g\n"
    + b"<13>"
    + b"w" * 30
    + b"\n7 <13>h\x00\n1\n"
    + b"<13>i"
)
FRAMED = [
    b"<13>a",
    b"<13>b",
    b"<13>c",
    b"<13>d",
    b" <13>e",
    b"0 <13>f",
    Problem.TOO_LARGE,
    Problem.TOO_LARGE,
    b"<13>g",
    Problem.TOO_LARGE,
    b"<13>h\x00",
    b"1",
    b"<13>i",
]


def test_frames_cut_at_every_byte_position_are_the_same_frames() -> None:
    assert frames(STREAM, max_bytes=16) == FRAMED
    assert frames(*(STREAM[i : i + 1] for i in range(len(STREAM))), max_bytes=16) == FRAMED
    for cut in range(len(STREAM) + 1):
        assert frames(STREAM[:cut], STREAM[cut:], max_bytes=16) == FRAMED, cut


# --- the mutation campaign's survivors (issue 21) --------------------------------------------


def test_the_id_is_blake2b_128_of_the_bytes_and_of_the_peer_without_a_hostname() -> None:
    """docs/syslog.md's formula: a sender's resend after the aggregator is upgraded must hash
    alike, or the message would be stored twice."""
    named = b"<13>Nov 30 07:48:45 host sshd[1]: the same line"
    assert decode(named).event_id == hashlib.blake2b(named, digest_size=16).hexdigest()
    bare = b"<13>Nov 30 07:48:45 sshd[1]: the same line"
    keyed = b"10.0.0.9\x00" + bare  # the peer's address, a NUL, the bytes
    assert decode(bare).event_id == hashlib.blake2b(keyed, digest_size=16).hexdigest()


@pytest.mark.parametrize(
    "raw",
    [
        "<13>1  - two spaces after the 1",  # an empty first field: no TIMESTAMP
        "<13>1 1999 files copied",  # digits, no '-': no date
        "<13>1 item-42 moved",  # a '-' where a date has one, but no digits before it
        "<13>1 -\tx",  # '-' then a tab: not the NILVALUE, a word
    ],
)
def test_text_after_1_that_is_no_rfc5424_timestamp_is_an_rfc3164_message(raw: str) -> None:
    record = decode(raw)
    fields = payload(record)
    assert (fields["format"], fields["app_name"], fields["message"]) == ("rfc3164", None, raw[4:])
    assert record.timestamp == "2026-11-30T08:00:00Z"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        # A date after "1 " makes it RFC 5424, however few fields follow.
        (b"<13>1 2026-11-30T07:48:44Z h app", HEADER),
        # Six fields with STRUCTURED-DATA where it belongs: RFC 5424 with a bad TIMESTAMP.
        (
            b"<13>1 yesterday h app - - [id] m",
            "the timestamp 'yesterday' is not RFC 3339 with an offset",
        ),
    ],
)
def test_a_header_meant_as_rfc5424_is_refused_when_broken(raw: bytes, why: str) -> None:
    with pytest.raises(Rejection) as caught:
        decode(raw)
    assert caught.value.message == f"not a syslog message: {why}"


def test_a_bracket_later_in_the_message_is_no_pid() -> None:
    fields = payload(decode("<13>app: see [x] and a]b"))
    assert (fields["app_name"], fields["procid"], fields["message"]) == (
        "app",
        None,
        "see [x] and a]b",
    )
    bare = payload(decode("<13>app a]b"))
    assert (bare["app_name"], bare["procid"], bare["message"]) == ("app", None, "a]b")
