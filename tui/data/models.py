"""Frozen snapshots of what the aggregator answered, parsed from its JSON.

The keys are the contract's; a missing one is a ``ProtocolError`` (shown on the panel), never a
silent ``–``. Unknown extra keys are ignored: the contract lets the server add fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class ProtocolError(Exception):
    """The server answered, but not in the shape of the contract."""


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    received: int
    unique: int
    duplicates: int
    topics: tuple[str, ...]
    uptime: float

    @property
    def duplicate_ratio(self) -> float:
        return self.duplicates / self.received if self.received else 0.0


@dataclass(frozen=True, slots=True)
class TopicRow:
    """One topic; counts are ``None`` when the server cannot say (no ``GET /topics``)."""

    topic: str
    unique: int | None = None
    duplicates: int | None = None
    last_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    topic: str
    event_id: str
    timestamp: str
    source: str
    received_at: str
    payload: str  # compact JSON text, for display


def _int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _need(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body


def parse_stats(body: Any) -> Stats:
    body = _need(body, "/stats")
    received = _int(body, "received")
    unique = _int(body, "unique_processed")
    duplicates = _int(body, "duplicate_dropped")
    uptime = body.get("uptime", 0.0)
    topics = body.get("topics", [])
    if received is None or unique is None or duplicates is None:
        raise ProtocolError("/stats: received, unique_processed and duplicate_dropped are needed")
    if not isinstance(uptime, int | float) or not isinstance(topics, list):
        raise ProtocolError("/stats: uptime must be a number and topics a list")
    return Stats(received, unique, duplicates, tuple(str(t) for t in topics), float(uptime))


def parse_topics(body: Any) -> list[TopicRow]:
    """``GET /topics``: a JSON array of ``{"topic", "received", "unique_processed",
    "duplicate_dropped", "last_seq"}`` (the counts named as in ``/stats``)."""
    if not isinstance(body, list):
        raise ProtocolError("/topics: expected a JSON array of topics")
    rows = []
    for item in body:
        item = _need(item, "/topics item")
        name = item.get("topic")
        unique = _int(item, "unique_processed")
        duplicates = _int(item, "duplicate_dropped")
        last_seq = _int(item, "last_seq")
        if not isinstance(name, str) or unique is None or duplicates is None or last_seq is None:
            raise ProtocolError(
                "/topics: every item needs topic, unique_processed, duplicate_dropped and last_seq"
            )
        rows.append(TopicRow(name, unique, duplicates, last_seq))
    return rows


def parse_events(body: Any) -> list[Event]:
    if not isinstance(body, list):
        raise ProtocolError("/events: expected a JSON array")
    events = []
    for item in body:
        item = _need(item, "/events item")
        seq = _int(item, "seq")
        if seq is None:
            raise ProtocolError("/events: every event needs an integer seq")
        payload = item.get("payload", {})
        events.append(
            Event(
                seq,
                str(item.get("topic", "")),
                str(item.get("event_id", "")),
                str(item.get("timestamp", "")),
                str(item.get("source", "")),
                str(item.get("received_at", "")),
                _compact(payload),
            )
        )
    return events


def _compact(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
