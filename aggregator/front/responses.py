"""The HTTP JSON that goes out: msgspec Structs for responses and error bodies.

What comes in is decoded and validated by ``aggregator/decoders/``; a stored event's shape is in
``aggregator/actors/sse.py``, beside its SSE frame.
"""

from __future__ import annotations

import msgspec

from aggregator.messages import Detail, Rejection


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
    unique_processed: int  # cumulative: every event of the topic ever stored
    duplicate_dropped: int
    last_seq: int
    stored_now: int  # unique_processed less what retention deleted
    expired: int  # deleted by retention, in all


def error_body(rejection: Rejection) -> ErrorBody:
    return ErrorBody(rejection.error, rejection.message, rejection.details)
