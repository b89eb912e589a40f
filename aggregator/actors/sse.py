"""A stored event as it goes out: its JSON shape (``GET /events`` too) and its SSE message.

One stored event becomes one ``id:``/``data:`` message. A message is encoded once (by the tail,
for every live subscriber at once; by a replaying subscriber for itself) and shared as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from aggregator.messages import StoredEvent
from aggregator.store.search import event_words


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


# Sent first, so the client knows the stream is open; ``retry`` is EventSource's reconnect delay.
OPENING = b"retry: 1000\n: subscribed\n\n"
HEARTBEAT = b": heartbeat\n\n"
SHUTTING_DOWN = b": the server is shutting down; reconnect with Last-Event-ID\n\n"
STORE_UNAVAILABLE = b": the store does not answer; reconnect with Last-Event-ID\n\n"


def internal_error(request_id: str) -> bytes:
    """The last message of a stream that met a bug: the client reconnects and resumes."""
    return b": internal error (request id %s); reconnect with Last-Event-ID\n\n" % (
        request_id.encode()
    )


_ENCODER = msgspec.json.Encoder()
# JSON whitespace outside strings may be CR or LF (a payload is kept as received); both end an SSE
# line, so they become spaces, which JSON treats the same. Inside strings they are escaped already.
_LINE_BREAKS = bytes.maketrans(b"\r\n", b"  ")


@dataclass(frozen=True, slots=True)
class Frame:
    """One committed event as an SSE message."""

    seq: int
    topic: str
    data: bytes
    event: StoredEvent  # for the filters of a stream (``source``, ``q``)
    _words: list[str] | None = field(default=None, init=False, repr=False, compare=False)

    def words(self) -> list[str]:
        """The event's searchable words, split once for all the streams whose ``q`` tests it
        (17 µs an event: a thousand such streams took 17 ms of the event loop per event)."""
        found = self._words
        if found is None:
            found = event_words(self.event.event_id, self.event.payload)
            object.__setattr__(self, "_words", found)  # a cache, not a change of the frame
        return found


def encode(row: StoredEvent) -> Frame:
    body = _ENCODER.encode(event_out(row)).translate(_LINE_BREAKS)
    return Frame(row.seq, row.topic, b"id: %d\ndata: %s\n\n" % (row.seq, body), row)


def encode_all(rows: list[StoredEvent]) -> list[Frame]:
    return [encode(row) for row in rows]
