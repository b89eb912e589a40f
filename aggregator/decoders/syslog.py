"""One syslog message (RFC 5424 or RFC 3164) in, one event out, or a ``Rejection``: nothing else.

Framing (RFC 6587 on TCP, one datagram on UDP) is ``syslog_framing.py``; this module sees one
message, without its octet count and without a trailing LF. The mapping is docs/syslog.md's table:

- ``topic`` ← APP-NAME (RFC 5424) or TAG (RFC 3164), with whitespace and control characters
  replaced by ``_`` and cut to 255 characters; ``syslog`` when the message has none;
- ``event_id`` ← a hash of the message's bytes, so byte-identical messages are one event (a
  relay's resend of the same line, logger run twice in the same microsecond); and of the
  peer's address when the message names no HOSTNAME (the address is then its ``source``);
- ``timestamp`` ← the message's, else the time of receipt; an RFC 3164 stamp has no year and no
  zone: UTC, in the year that puts it nearest to the time of receipt;
- ``source`` ← HOSTNAME, else the peer's address;
- ``payload`` ← the parsed fields and the message.

Bytes that are not UTF-8 are decoded as U+FFFD (devices send Latin-1); the hash is of the bytes
as received, so two messages that differ only there stay two events.
"""

from __future__ import annotations

import contextlib
import hashlib
import unicodedata
from datetime import UTC, datetime
from typing import Any

import msgspec

from aggregator.decoders.publish import MAX_TEXT, normalise_timestamp
from aggregator.messages import EventRecord, Limits, Rejection

DEFAULT_TOPIC = "syslog"
FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "audit", "alert", "clock",
    *(f"local{n}" for n in range(8)),
)  # fmt: skip
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
MONTHS = {
    month: number
    for number, month in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
NIL = "-"
_ENCODE = msgspec.json.Encoder().encode


def malformed(why: str) -> Rejection:
    return Rejection(400, "malformed", f"not a syslog message: {why}")


def decode_syslog(frame: bytes, peer: str, received: datetime, limits: Limits) -> EventRecord:
    """The event of one message; ``peer`` (the sender's address) stands in for a missing
    HOSTNAME and ``received`` (UTC) for a missing timestamp. Raises ``Rejection``: 400
    ``malformed`` for what is not syslog, 413 ``too_large`` for a payload over the limit."""
    text = frame.decode("utf-8", "replace")
    priority, rest = _priority(text)
    version_1 = rest.startswith("1 ") and _rfc5424_like(rest[2:])
    stamp, parsed = _rfc5424(rest[2:]) if version_1 else _rfc3164(rest, received)
    fields = {
        "format": "rfc5424" if version_1 else "rfc3164",
        "priority": priority,
        "facility": FACILITIES[priority >> 3],
        "severity": SEVERITIES[priority & 7],
        **parsed,
    }
    payload = _ENCODE(fields)
    if len(payload) > limits.max_payload_bytes:
        raise Rejection(
            413,
            "too_large",
            f"the message's payload is {len(payload)} bytes; the limit is "
            f"{limits.max_payload_bytes} (AGGREGATOR_MAX_PAYLOAD_BYTES)",
        )
    hostname = fields["hostname"]
    named = bool(hostname) and not hostname.isspace()
    source = hostname[:MAX_TEXT] if named else peer
    # Without a HOSTNAME the sender's address is part of the event (its source): two hosts'
    # identical lines are two events, not one and a "duplicate".
    hashed = frame if named else b"%s\x00%s" % (peer.encode(), frame)
    return EventRecord(
        topic(fields["app_name"]),
        hashlib.blake2b(hashed, digest_size=16).hexdigest(),
        stamp or normalise_timestamp(received),
        source,
        payload.decode(),
    )


def topic(app_name: str | None) -> str:
    """The event's topic for an APP-NAME or TAG: the contract's rule (1–255 characters, no
    whitespace, no control characters) kept by replacing what breaks it."""
    if not app_name:
        return DEFAULT_TOPIC
    if not app_name.isprintable() or " " in app_name:
        app_name = "".join(
            "_" if char.isspace() or unicodedata.category(char) == "Cc" else char
            for char in app_name
        )
    return app_name[:MAX_TEXT]


def _priority(text: str) -> tuple[int, str]:
    """PRI, ``<0>`` to ``<191>``, and the text after it."""
    end = text.find(">", 1, 5)
    digits = text[1:end]
    if not text.startswith("<") or end < 0 or not (digits.isascii() and digits.isdigit()):
        raise malformed("it must start with a priority such as <13>")
    priority = int(digits)
    if priority > 191:
        raise malformed(f"the priority <{digits}> is over 191")
    return priority, text[end + 1 :]


def _rfc5424_like(header: str) -> bool:
    """What follows ``<PRI>1 `` is meant as RFC 5424: its TIMESTAMP is ``-`` or a date, or it
    has six fields with STRUCTURED-DATA where it belongs. An RFC 3164 message without a
    timestamp may start with "1 " too ("1 file copied"): it is no broken RFC 5424 header."""
    fields = header.split(" ", 5)
    return (
        fields[0] == NIL
        or _dated(fields[0])
        or (len(fields) == 6 and fields[5].startswith((NIL, "[")))
    )


def _dated(text: str) -> bool:
    """``text`` starts like an RFC 3339 date (``YYYY-``)."""
    return text[4:5] == "-" and text[:4].isascii() and text[:4].isdigit()


def _nil(value: str) -> str | None:
    return None if value == NIL else value


def _rfc5424(rest: str) -> tuple[str | None, dict[str, Any]]:
    """After ``<PRI>1 ``: TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]."""
    parts = rest.split(" ", 5)
    if len(parts) < 6 or "" in parts[:5]:
        raise malformed("an RFC 5424 header has six fields after the version")
    stamp, hostname, app_name, procid, msgid, tail = parts
    structured, message = _structured_data(tail)
    return (None if stamp == NIL else rfc3339(stamp)), {
        "hostname": _nil(hostname),
        "app_name": _nil(app_name),
        "procid": _nil(procid),
        "msgid": _nil(msgid),
        "structured_data": structured,
        "message": message.removeprefix("\ufeff"),  # the BOM that says "UTF-8"
    }


def rfc3339(stamp: str) -> str:
    """An RFC 3339 date-time with its offset (``Z`` or ``±hh:mm``), as RFC 5424 requires;
    normalised as the contract says."""
    if not (
        len(stamp) >= 20
        and stamp[4] == stamp[7] == "-"
        and stamp[10] in "Tt"
        and stamp[13] == stamp[16] == ":"
        and (stamp[-1] in "Zz" or stamp[-6] in "+-")
    ):
        raise malformed(f"the timestamp {stamp[:40]!r} is not RFC 3339 with an offset")
    try:  # an offset can carry it out of range: OverflowError
        return normalise_timestamp(datetime.fromisoformat(stamp.upper()))
    except (ValueError, OverflowError):
        raise malformed(f"the timestamp {stamp[:40]!r} is not a valid date-time") from None


def _structured_data(tail: str) -> tuple[dict[str, dict[str, Any]] | None, str]:
    """STRUCTURED-DATA (``-`` or ``[id name="value"…]…``) and the MSG after it."""
    if tail == NIL or tail.startswith(NIL + " "):
        return None, tail[2:]
    if not tail.startswith("["):
        raise malformed("STRUCTURED-DATA must be '-' or start with '['")
    elements: dict[str, dict[str, Any]] = {}
    pos = 0
    while pos < len(tail) and tail[pos] == "[":
        pos = _sd_element(tail, pos + 1, elements)
    if pos < len(tail) and tail[pos] != " ":
        raise malformed("STRUCTURED-DATA must be followed by a space and the message")
    return elements, tail[pos + 1 :]


def _sd_element(tail: str, pos: int, elements: dict[str, dict[str, Any]]) -> int:
    """One ``[SD-ID *(SP PARAM-NAME="PARAM-VALUE")]`` from after its ``[``; where it ends."""
    sd_id, pos = _sd_name(tail, pos)
    params: dict[str, Any] = elements.setdefault(sd_id, {})
    while tail[pos : pos + 1] == " ":
        name, pos = _sd_name(tail, pos + 1)
        if tail[pos : pos + 2] != '="':
            raise malformed(f'the SD-PARAM {name!r} must be followed by ="value"')
        value, pos = _sd_value(tail, pos + 2)
        seen = params.get(name)
        params[name] = (
            value if seen is None else [*(seen if isinstance(seen, list) else [seen]), value]
        )
    if tail[pos : pos + 1] != "]":
        raise malformed("an SD-ELEMENT must end with ']'")
    return pos + 1


def _sd_name(tail: str, pos: int) -> tuple[str, int]:
    end = pos
    while end < len(tail) and tail[end] not in ' ="]' and end - pos < 32:
        end += 1
    if end == pos:
        raise malformed("an SD-ID or PARAM-NAME is empty or too long")
    return tail[pos:end], end


def _sd_value(tail: str, pos: int) -> tuple[str, int]:
    """A PARAM-VALUE up to its closing quote; ``\\"``, ``\\\\`` and ``\\]`` unescaped."""
    out: list[str] = []
    while pos < len(tail):
        char = tail[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\" and tail[pos + 1 : pos + 2] in ('"', "\\", "]"):
            pos += 1
            char = tail[pos]
        out.append(char)
        pos += 1
    raise malformed("a PARAM-VALUE has no closing quote")


def _rfc3164(rest: str, received: datetime) -> tuple[str | None, dict[str, Any]]:
    """After ``<PRI>``: [TIMESTAMP [HOSTNAME]] TAG[[PID]][:] MSG, as BSD syslog and its relays
    write it (rsyslog's forwarding format puts no colon after the TAG)."""
    stamp: str | None = None
    hostname: str | None = None
    if rest[3:4] == " " and rest[:3] in MONTHS and rest[15:16] in (" ", ""):
        stamp = normalise_timestamp(_bsd_stamp(rest[:15], received))
        rest = rest[16:]
    elif _dated(rest):  # an RFC 3339 stamp in BSD layout, or text that starts like one
        first, _, after = rest.partition(" ")
        # "2024-01-01 backup done": no stamp; the text is the message.
        with contextlib.suppress(Rejection):
            stamp, rest = rfc3339(first), after
    if stamp is not None:
        first, space, after = rest.partition(" ")
        if (
            space
            and not first.endswith(":")
            and "[" not in first
            and any(char.isalnum() for char in first)  # not the "--" of "-- MARK --"
        ):
            hostname, rest = first, after
    app_name, procid, message = _tag(rest)
    return stamp, {
        "hostname": hostname,
        "app_name": app_name,
        "procid": procid,
        "msgid": None,
        "structured_data": None,
        "message": message,
    }


def _bsd_stamp(stamp: str, received: datetime) -> datetime:
    """``Mmm dd hh:mm:ss`` (day space-padded), taken as UTC in the year nearest to ``received``."""
    day, clock = stamp[4:6].strip(), stamp[7:].split(":")
    digits = all(len(p) == 2 and p.isdigit() for p in clock)
    if not (stamp[6] == " " and day.isdigit() and len(clock) == 3 and digits):
        raise malformed(f"the timestamp {stamp!r} is not 'Mmm dd hh:mm:ss'")
    candidates = []
    for year in (received.year - 1, received.year, received.year + 1):
        try:
            hour, minute, second = (int(p) for p in clock)
            candidates.append(
                datetime(year, MONTHS[stamp[:3]], int(day), hour, minute, second, tzinfo=UTC)
            )
        except ValueError:
            continue
    if not candidates:
        raise malformed(f"the timestamp {stamp!r} is not a date")
    return min(candidates, key=lambda c: abs(c - received))


def _tag(rest: str) -> tuple[str | None, str | None, str]:
    """TAG, the PID in ``TAG[PID]``, and the message after ``: `` (or after one space).

    A first word without a letter is no TAG unless a ``[PID]`` follows it: Cisco IOS starts
    with a sequence number (``<189>123: *Mar  1 18:46:11: %SYS-5-…``), and TAG-less text with
    ``-- MARK --`` or a date; taken as the TAG, each number would become a topic of its own.
    The message is then the whole text."""
    end = 0
    while end < len(rest) and rest[end] not in " [:":
        end += 1
    tag, procid = rest[:end] or None, None
    close = rest.find("]", end) if rest[end : end + 1] == "[" else -1
    if close > 0:
        procid, end = rest[end + 1 : close], close + 1
    elif tag is not None and not any(char.isalpha() for char in tag):
        return None, None, rest
    if rest[end : end + 1] == ":":
        end += 1
    if rest[end : end + 1] == " ":
        end += 1
    return tag, procid, rest[end:]
