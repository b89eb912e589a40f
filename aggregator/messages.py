"""Internal messages between the actors: frozen, slotted, plain data. No trio logic here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

import trio

if TYPE_CHECKING:
    from aggregator.wire import Rejection


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


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The store could not commit; nothing of the request was stored and a resend is safe."""

    reason: str


@dataclass(frozen=True, slots=True)
class Internal:
    """A bug met while handling this request alone; logged under ``request_id``, counted by
    ``stage``. ``stored_nothing``: the request was refused or rolled back before any COMMIT."""

    stage: str
    request_id: str
    stored_nothing: bool = True


WriteOutcome: TypeAlias = Accepted | Unavailable | Internal
# What a worker answers the front: the writer's outcome, or the reason the request is refused.
PublishOutcome: TypeAlias = "Accepted | Unavailable | Internal | Rejection"


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Events of one request, to be committed atomically; the writer answers on ``reply``."""

    events: list[EventRecord]
    reply: trio.MemorySendChannel[WriteOutcome]


@dataclass(frozen=True, slots=True)
class Submission:
    """A raw publish request as the front received it; a worker answers on ``reply``."""

    body: bytes
    content_type: str | None
    content_encoding: str | None
    reply: trio.MemorySendChannel[PublishOutcome]
