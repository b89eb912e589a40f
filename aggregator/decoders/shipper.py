"""What the log-shipper doors (OTLP, Loki) share: the topic override, ids from content hashes,
nanosecond timestamps, and the contract's rules for the text fields and the payload.

A shipper's record carries no event id (OTLP's ``log.record.uid`` is optional, Loki has none),
so the id is a hash of the record's canonical form: a shipper's retry re-sends the same record
and gets the same id, and two records identical in every hashed field are one event.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from aggregator.messages import Limits, Rejection

TOPIC_HEADER = "x-aggregator-topic"
MAX_TEXT = 255
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CANONICAL = msgspec.json.Encoder(order="sorted")


@dataclass
class Refused:
    """Records one request's decoder refused while it kept the rest (OTLP's partial success).
    Owned by one request: the route makes it, the decoder fills it, the route reads it after the
    outcome. Not a message between actors, so not frozen."""

    count: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, where: str, why: str) -> None:
        self.count += 1
        if len(self.reasons) < 10:  # the first few are enough to act on
            self.reasons.append(f"{where}: {why}")


def content_id(record: Any) -> str:
    """A 32-hex-digit id of ``record`` (JSON-able), from its canonical JSON (keys sorted)."""
    return digest(_CANONICAL.encode(record))


def digest(data: bytes) -> str:
    """32 hex digits: BLAKE2b with a 128-bit digest, as the syslog door's ids."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def ns_timestamp(ns: int) -> str | None:
    """The contract's timestamp for nanoseconds since the epoch, to the microsecond; None when
    it does not fit (before year 1, after 9999)."""
    seconds, micros = divmod(ns // 1000, 1_000_000)
    second = _second(seconds)
    if second is None:
        return None
    return f"{second}.{micros:06d}Z" if micros else second + "Z"


@functools.lru_cache(maxsize=1024)
def _second(seconds: int) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS`` of a second since the epoch; cached, since the records of one
    request mostly share their seconds (datetime arithmetic was a quarter of OTLP's decoding)."""
    try:
        value = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S") if value.year >= 1000 else _early(value)


def _early(value: datetime) -> str:
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )


def text_problem(name: str, value: str) -> str | None:
    """What breaks the contract's rule for ``topic``, ``event_id`` or ``source``; None if fine."""
    if not value or value.isspace():
        return f"{name} is empty or blank"
    if len(value) > MAX_TEXT:
        return f"{name} has {len(value)} characters; the limit is {MAX_TEXT}"
    if name == "topic":
        for position, char in enumerate(value):
            if char.isspace() or unicodedata.category(char) == "Cc":
                return (
                    f"topic {value!r} has {char!r} at position {position}; a topic has no "
                    "whitespace or control characters (set one with ?topic= or the "
                    "X-Aggregator-Topic header)"
                )
    return None


def topic_override(headers: Mapping[str, str], query_topic: str | None) -> str | None:
    """The topic a request names for all its records (query ``topic``, then the header), or
    None; a 400 when it breaks the topic rule, since every record would."""
    topic = query_topic if query_topic is not None else headers.get(TOPIC_HEADER)
    if topic is None:
        return None
    problem = text_problem("topic", topic)
    if problem:
        raise Rejection(400, "validation", f"the request's {problem}")
    return topic


def encode_payload(payload: dict[str, Any], limits: Limits) -> bytes | None:
    """The payload's canonical JSON text (keys sorted: a hash of it does not depend on the
    order fields arrived in); None when it is over the payload limit."""
    text = _CANONICAL.encode(payload)
    if len(text) > limits.max_payload_bytes:
        return None
    return text


def payload_too_large(limits: Limits) -> str:
    return (
        f"the record's payload is over {limits.max_payload_bytes} bytes, the limit "
        "(AGGREGATOR_MAX_PAYLOAD_BYTES)"
    )


def check_count(count: int, limits: Limits) -> None:
    if count > limits.max_batch_events:
        raise Rejection(
            413,
            "too_large",
            f"the request has {count} records; the limit is {limits.max_batch_events} "
            "(AGGREGATOR_MAX_BATCH_EVENTS)",
        )
