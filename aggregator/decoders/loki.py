"""The body of ``POST /loki/api/v1/push``: Loki's ``PushRequest``, as snappy-compressed protobuf
(Promtail, Grafana Alloy, the Docker driver) or JSON (logging handlers), one event per entry.

The mapping (docs/loki.md has it as a table): ``topic`` ← the label ``service_name``, then
``job``, then ``app`` (or the request's override, or ``loki``); ``event_id`` ← a content hash of
(labels, timestamp in ns, line), Loki's own rule for one entry; ``timestamp`` ← the entry's ns;
``source`` ← the label ``host``, ``hostname`` or ``instance`` (or ``loki``); ``payload`` ← the
line, the labels, the structured metadata and the ns timestamp.

The request is whole: one entry that cannot be an event refuses the request (400) and nothing
of it is stored, so a shipper never sees a push half taken.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import cramjam
import msgspec
from google.protobuf.message import DecodeError

from aggregator.decoders.content import decode_content, media_type, unsupported_media_type
from aggregator.decoders.proto.loki_push_pb2 import PushRequest
from aggregator.decoders.shipper import (
    check_count,
    content_id,
    encode_payload,
    ns_timestamp,
    payload_too_large,
    text_problem,
    topic_override,
)
from aggregator.messages import EventRecord, Limits, Rejection

DEFAULT_TOPIC = "loki"
DEFAULT_SOURCE = "loki"
TOPIC_LABELS = ("service_name", "job", "app")
SOURCE_LABELS = ("host", "hostname", "instance")
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# One `name="value"` of a Prometheus label set; values are Go-quoted strings.
_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_.]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)

# (labels, entries); an entry is (ns, line, structured metadata).
Stream = tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]


class _JsonStream(msgspec.Struct):
    stream: dict[str, str]
    values: list[list[str | int | dict[str, str]]]


class _JsonPush(msgspec.Struct):
    streams: list[_JsonStream]


_JSON = msgspec.json.Decoder(_JsonPush)


def decode_loki(
    body: bytes, headers: Mapping[str, str], limits: Limits, *, query_topic: str | None = None
) -> list[EventRecord]:
    """The events of one Loki push; raises ``Rejection`` for the whole request otherwise."""
    media = media_type(headers)
    if media not in (PROTOBUF, JSON):
        raise unsupported_media_type(
            media,
            "'Content-Type: application/x-protobuf' (snappy-compressed) or "
            "'Content-Type: application/json'",
        )
    topic = topic_override(headers, query_topic)
    body = decode_content(body, headers, limits.max_body_bytes)
    streams = _json_streams(body) if media == JSON else _protobuf_streams(body, limits)
    check_count(sum(len(entries) for _, entries in streams), limits)
    events: list[EventRecord] = []
    for i, (labels, entries) in enumerate(streams):
        if not labels:
            raise Rejection(
                400, "validation", f"stream {i}: at least one label pair is required per stream"
            )
        stream_topic = topic or next(
            (labels[k] for k in TOPIC_LABELS if labels.get(k)), DEFAULT_TOPIC
        )
        source = next((labels[k] for k in SOURCE_LABELS if labels.get(k)), DEFAULT_SOURCE)
        for name, value in (("topic", stream_topic), ("source", source)):
            if problem := text_problem(name, value):
                raise Rejection(400, "validation", f"stream {i}: {problem}")
        for j, (ns, line, metadata) in enumerate(entries):
            events.append(_event(i, j, labels, ns, line, metadata, stream_topic, source, limits))
    return events


def _event(
    i: int,
    j: int,
    labels: dict[str, str],
    ns: int,
    line: str,
    metadata: dict[str, str],
    topic: str,
    source: str,
    limits: Limits,
) -> EventRecord:
    timestamp = ns_timestamp(ns)
    if timestamp is None:
        raise Rejection(
            400, "validation", f"stream {i} entry {j}: timestamp {ns} ns is outside years 1–9999"
        )
    payload: dict[str, Any] = {"line": line, "labels": labels, "time_ns": str(ns)}
    if metadata:
        payload["structured_metadata"] = metadata
    text = encode_payload(payload, limits)
    if text is None:
        raise Rejection(400, "validation", f"stream {i} entry {j}: {payload_too_large(limits)}")
    return EventRecord(topic, content_id([labels, ns, line]), timestamp, source, text.decode())


def _protobuf_streams(body: bytes, limits: Limits) -> list[Stream]:
    """Snappy (block format, as Loki reads it), then protobuf. The decompressed size is read
    from the snappy header and checked before anything is decompressed: no snappy bomb."""
    try:
        size = int(cramjam.snappy.decompress_raw_len(body))
        if size > limits.max_body_bytes:
            raise Rejection(
                413,
                "too_large",
                f"the body decompresses to {size} bytes; the limit is {limits.max_body_bytes} "
                "(AGGREGATOR_MAX_BODY_BYTES)",
            )
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as exc:
        raise Rejection(
            400, "malformed", f"the body is not valid snappy (block format): {exc}"
        ) from None
    try:
        request = PushRequest.FromString(raw)
    except DecodeError as exc:
        raise Rejection(
            400, "malformed", f"the body is not a protobuf PushRequest: {exc}"
        ) from None
    streams: list[Stream] = []
    for i, stream in enumerate(request.streams):
        labels = _labels(i, stream.labels)
        entries = [
            (
                entry.timestamp.seconds * 1_000_000_000 + entry.timestamp.nanos,
                entry.line,
                {pair.name: pair.value for pair in entry.structuredMetadata},
            )
            for entry in stream.entries
        ]
        streams.append((labels, entries))
    return streams


def _json_streams(body: bytes) -> list[Stream]:
    try:
        push = _JSON.decode(body)
    except msgspec.ValidationError as exc:
        raise Rejection(
            400, "validation", f"the push body does not fit Loki's shape: {exc}"
        ) from None
    except msgspec.DecodeError as exc:
        raise Rejection(400, "malformed", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Rejection(400, "malformed", "the body is nested too deeply to decode") from None
    except UnicodeDecodeError as exc:  # msgspec raises it for invalid UTF-8 inside a string
        raise Rejection(400, "malformed", f"the body is not valid UTF-8: {exc}") from None
    return [(s.stream, list(_json_entries(i, s.values))) for i, s in enumerate(push.streams)]


def _json_entries(i: int, values: list[list[Any]]) -> Iterator[tuple[int, str, dict[str, str]]]:
    for j, value in enumerate(values):
        if len(value) not in (2, 3):
            raise _bad_entry(i, j, f"has {len(value)} items")
        ns, line, *rest = value
        metadata = rest[0] if rest else {}
        if isinstance(ns, str) and ns.isascii() and ns.isdigit():
            ns = int(ns)
        if not isinstance(ns, int) or not isinstance(line, str) or not isinstance(metadata, dict):
            raise _bad_entry(i, j, "does not have that shape")
        yield ns, line, metadata


def _bad_entry(i: int, j: int, what: str) -> Rejection:
    return Rejection(
        400,
        "validation",
        f"stream {i} value {j} {what}; a value is "
        '["<unix epoch in nanoseconds>", "<log line>"] with an optional object of '
        "structured metadata third",
    )


def _labels(i: int, text: str) -> dict[str, str]:
    """A Prometheus label set such as ``{job="x", app="y"}`` as a dict."""
    labels: dict[str, str] = {}
    rest = text.strip()
    if rest in ("", "{}"):
        return labels
    if not rest.startswith("{"):
        raise _bad_labels(i, text)
    position = 1
    while position < len(rest):
        match = _PAIR.match(rest, position)
        if match is None:
            raise _bad_labels(i, text)
        labels[match.group(1)] = _ESCAPE.sub(
            lambda m: _ESCAPES.get(m.group(1), m.group(0)), match.group(2)
        )
        position = match.end()
        if match.group(3) == "}":
            if rest[position:].strip():
                raise _bad_labels(i, text)
            return labels
    raise _bad_labels(i, text)


def _bad_labels(i: int, text: str) -> Rejection:
    shown = text if len(text) <= 80 else text[:80] + "…"
    return Rejection(
        400,
        "validation",
        f'stream {i}: labels {shown!r} are not a label set such as {{job="x", app="y"}}',
    )
