"""Frozen snapshots of what the aggregator answered, parsed leniently from its JSON."""

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


def _int(body: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


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
    """``GET /topics``: a list of objects, or ``{"topics": [...]}``; key names as in /stats or
    short (``unique``/``stored``, ``duplicates``)."""
    if isinstance(body, dict):
        body = body.get("topics")
    if not isinstance(body, list):
        raise ProtocolError("/topics: expected a JSON array of topics")
    rows = []
    for item in body:
        item = _need(item, "/topics item")
        name = item.get("topic", item.get("name"))
        if not isinstance(name, str):
            raise ProtocolError("/topics: every item needs a topic name")
        rows.append(
            TopicRow(
                name,
                _int(item, "unique", "stored", "unique_processed"),
                _int(item, "duplicates", "duplicate_dropped"),
                _int(item, "last_seq"),
            )
        )
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
