"""The HTTP JSON that goes out: msgspec Structs for responses and errors, and ``Rejection``.

What comes in is decoded and validated in ``aggregator/validation.py``.
"""

from __future__ import annotations

import msgspec

from aggregator.messages import StoredEvent


class EventOut(msgspec.Struct):
    topic: str
    event_id: str
    timestamp: str
    source: str
    payload: msgspec.Raw
    seq: int
    received_at: str


def event_out(row: StoredEvent) -> EventOut:
    """A stored event as ``GET /events`` and ``/subscribe`` show it: the payload as stored."""
    return EventOut(
        row.topic,
        row.event_id,
        row.timestamp,
        row.source,
        msgspec.Raw(row.payload.encode()),
        row.seq,
        row.received_at,
    )


class Detail(msgspec.Struct):
    index: int | None
    field: str | None
    message: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    error: str
    message: str
    details: list[Detail] | None = None


class PublishResult(msgspec.Struct):
    accepted: int
    stored: int
    duplicates: int


class Stats(msgspec.Struct):
    received: int
    unique_processed: int
    duplicate_dropped: int
    topics: list[str]
    uptime: float


class TopicOut(msgspec.Struct):
    """One row of ``GET /topics``; key names as in ``/stats``."""

    topic: str
    received: int
    unique_processed: int
    duplicate_dropped: int
    last_seq: int


class Rejection(Exception):
    """A request the aggregator refuses: an HTTP status and the error body that explains it."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        details: list[Detail] | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(error, message, details)
        self.retry_after = retry_after
