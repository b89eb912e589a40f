"""Internal messages between the actors: frozen, slotted, plain data. No trio logic here.

``Rejection`` is one of them: the refusal a decoder raises and a worker hands back to the front,
which turns it into the HTTP error body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

import trio


class EventRecord(NamedTuple):
    """One validated, normalised event; a tuple so that it binds straight into SQL."""

    topic: str
    event_id: str
    timestamp: str
    source: str
    payload: str


class StoredEvent(NamedTuple):
    """An event as the store holds it: the record plus its commit order and commit time."""

    seq: int
    topic: str
    event_id: str
    timestamp: str
    source: str
    payload: str
    received_at: str


@dataclass(frozen=True, slots=True)
class Limits:
    """The request limits a worker checks; copied from the Config so workers need no more."""

    max_body_bytes: int
    max_batch_events: int
    max_payload_bytes: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """Every event of a request is committed or was already stored."""

    accepted: int
    stored: int
    duplicates: int
    # Per event, in request order: stored (True) or already there (False), as the writer's
    # transaction decided; a door that answers per item (the bulk API) needs it.
    stored_flags: Sequence[bool] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The store could not commit; a resend is safe. ``stored_nothing`` is False when the
    failure came at COMMIT or with the connection in an unknown state: then the events may or
    may not have been stored (a resend finds them as duplicates if they were)."""

    reason: str
    stored_nothing: bool = True


@dataclass(frozen=True, slots=True)
class Internal:
    """A bug met while handling this request alone; logged under ``request_id``, counted by
    ``stage``. ``stored_nothing``: the request was refused or rolled back before any COMMIT."""

    stage: str
    request_id: str
    stored_nothing: bool = True


@dataclass(frozen=True, slots=True)
class Detail:
    """One problem of a refused request: which event (its index), which field, what is wrong."""

    index: int | None
    field: str | None
    message: str


class Rejection(Exception):
    """A request the aggregator refuses: an HTTP status, an error kind and a message that names
    the rule or limit broken (and per-problem ``details`` for a validation error)."""

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
        self.error = error
        self.message = message
        self.details = details
        self.retry_after = retry_after


WriteOutcome: TypeAlias = Accepted | Unavailable | Internal
# What a worker answers the front: the writer's outcome, or the reason the request is refused.
PublishOutcome: TypeAlias = Accepted | Unavailable | Internal | Rejection


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Events of one request, to be committed atomically; the writer answers on ``reply``."""

    events: list[EventRecord]
    reply: trio.MemorySendChannel[WriteOutcome]


# A wire decoder (``aggregator/decoders/``): a body and its headers (lower-case names) in, the
# events out, or a ``Rejection`` raised; nothing else. A route binds what else it knows (a
# path parameter) with ``functools.partial``.
Decoder: TypeAlias = Callable[[bytes, Mapping[str, str], "Limits"], list[EventRecord]]


@dataclass(frozen=True, slots=True)
class Submission:
    """A raw request as the front received it, and the decoder that reads it; a worker runs the
    decoder and answers on ``reply``."""

    body: bytes
    headers: Mapping[str, str]
    decode: Decoder
    reply: trio.MemorySendChannel[PublishOutcome]
