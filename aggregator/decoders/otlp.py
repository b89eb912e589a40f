"""The body of ``POST /v1/logs``: an OTLP ``ExportLogsServiceRequest``, protobuf or JSON,
decoded with the maintained definitions (``opentelemetry-proto``), one event per log record.

The mapping (docs/otlp.md has it as a table): ``topic`` ← the resource's ``service.name`` (or
the request's override, or ``otlp``); ``event_id`` ← the record attribute ``log.record.uid``,
else a content hash of the record with its resource and scope; ``timestamp`` ← ``time_unix_nano``,
else ``observed_time_unix_nano``; ``source`` ← ``host.name``, ``service.instance.id``,
``service.name`` (or ``otlp``); ``payload`` ← everything else of the record.

OTLP answers partial success: a record that cannot be an event (no time, payload over the limit,
a bad ``log.record.uid``) is refused alone, counted in ``refused``, and the rest are stored. A
body that cannot be decoded is refused whole (400).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from aggregator.decoders.content import decode_content, media_type, unsupported_media_type
from aggregator.decoders.shipper import (
    Refused,
    check_count,
    digest,
    encode_payload,
    ns_timestamp,
    payload_too_large,
    text_problem,
    topic_override,
)
from aggregator.messages import EventRecord, Limits, Rejection

DEFAULT_TOPIC = "otlp"
DEFAULT_SOURCE = "otlp"
UID = "log.record.uid"
PROTOBUF = ("application/x-protobuf", "application/protobuf")
JSON = "application/json"
_SOURCES = ("host.name", "service.instance.id", "service.name")
_JSON = msgspec.json.Decoder()
_ID_FIELDS = ("traceId", "spanId", "trace_id", "span_id")


def decode_otlp(
    body: bytes,
    headers: Mapping[str, str],
    limits: Limits,
    *,
    query_topic: str | None = None,
    refused: Refused | None = None,
) -> list[EventRecord]:
    """The events of one OTLP logs request; the records it cannot map go to ``refused``."""
    refused = Refused() if refused is None else refused
    media = media_type(headers)
    if media not in (*PROTOBUF, JSON):
        raise unsupported_media_type(
            media, "'Content-Type: application/x-protobuf' or 'Content-Type: application/json'"
        )
    topic = topic_override(headers, query_topic)
    body = decode_content(body, headers, limits.max_body_bytes)
    request = _parse_json(body, limits) if media == JSON else _parse_protobuf(body)
    check_count(
        sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs), limits
    )
    events: list[EventRecord] = []
    for i, resource_logs in enumerate(request.resource_logs):
        resource = _attributes(resource_logs.resource.attributes)
        service = resource.get("service.name")
        resource_topic = topic or (service if isinstance(service, str) and service else None)
        source = next(
            (v for k in _SOURCES if isinstance(v := resource.get(k), str) and v.strip()),
            DEFAULT_SOURCE,
        )
        resource_topic = resource_topic or DEFAULT_TOPIC
        # The same for every record of the resource: checked once.
        unusable = text_problem("topic", resource_topic) or text_problem("source", source)
        for j, scope_logs in enumerate(resource_logs.scope_logs):
            scope = _scope(scope_logs)
            for k, record in enumerate(scope_logs.log_records):
                try:
                    if unusable:
                        raise _Refuse(unusable)
                    events.append(_event(record, resource, scope, resource_topic, source, limits))
                except _Refuse as refusal:
                    where = f"resource_logs[{i}].scope_logs[{j}].log_records[{k}]"
                    refused.add(where, str(refusal))
    return events


class _Refuse(Exception):
    """One record that cannot be an event; the others go on."""


def _event(
    record: Any,
    resource: dict[str, Any],
    scope: dict[str, Any],
    topic: str,
    source: str,
    limits: Limits,
) -> EventRecord:
    ns = record.time_unix_nano or record.observed_time_unix_nano
    if not ns:
        raise _Refuse("the record has neither time_unix_nano nor observed_time_unix_nano")
    timestamp = ns_timestamp(ns)
    if timestamp is None:
        raise _Refuse(f"the record's time {ns} ns is outside years 1–9999")
    attributes = _attributes(record.attributes)
    payload: dict[str, Any] = {}
    if record.HasField("body"):
        payload["body"] = _any(record.body)
    if record.severity_number:
        payload["severity_number"] = record.severity_number
    if record.severity_text:
        payload["severity_text"] = record.severity_text
    if record.event_name:
        payload["event_name"] = record.event_name
    if attributes:
        payload["attributes"] = attributes
    if resource:
        payload["resource"] = resource
    if scope:
        payload["scope"] = scope
    if record.trace_id:
        payload["trace_id"] = record.trace_id.hex()
    if record.span_id:
        payload["span_id"] = record.span_id.hex()
    if record.flags:
        payload["flags"] = record.flags
    if record.time_unix_nano and record.observed_time_unix_nano:
        payload["observed_time_unix_nano"] = record.observed_time_unix_nano
    text = encode_payload(payload, limits)
    if text is None:
        raise _Refuse(payload_too_large(limits))
    uid = attributes.get(UID)
    if uid is None:
        # The record's content: both times (to the nanosecond) and the payload, which holds
        # everything else of the record, its resource and its scope.
        times = b"%d:%d:" % (record.time_unix_nano, record.observed_time_unix_nano)
        event_id = digest(times + text)
    elif not isinstance(uid, str) or text_problem("event_id", uid):
        raise _Refuse(f"the attribute {UID} must be a string of 1–255 characters, not blank")
    else:
        event_id = uid
    return EventRecord(topic, event_id, timestamp, source, text.decode())


def _scope(scope_logs: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {}
    if scope_logs.scope.name:
        scope["name"] = scope_logs.scope.name
    if scope_logs.scope.version:
        scope["version"] = scope_logs.scope.version
    if scope_logs.scope.attributes:
        scope["attributes"] = _attributes(scope_logs.scope.attributes)
    return scope


def _attributes(pairs: Any) -> dict[str, Any]:
    """OTLP key-value pairs as a JSON object (a key given twice keeps its last value)."""
    return {pair.key: _any(pair.value) for pair in pairs}


def _any(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as JSON: bytes as base64, an unset value as null."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [_any(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def _parse_protobuf(body: bytes) -> ExportLogsServiceRequest:
    try:
        request: ExportLogsServiceRequest = ExportLogsServiceRequest.FromString(body)
    except DecodeError as exc:
        raise Rejection(
            400, "malformed", f"the body is not a protobuf ExportLogsServiceRequest: {exc}"
        ) from None
    return request


def _parse_json(body: bytes, limits: Limits) -> ExportLogsServiceRequest:
    """OTLP/JSON is protobuf's JSON mapping but for ``traceId``/``spanId``, which are hex, not
    base64; they are turned into base64 before protobuf's parser reads the rest. That parser is
    pure Python: the record count is checked before it runs."""
    try:
        document = _JSON.decode(body)
        if not isinstance(document, dict):
            raise json_format.ParseError("the body must be a JSON object")
        count = 0
        for resource_logs in _items(document, "resourceLogs", "resource_logs"):
            for scope_logs in _items(resource_logs, "scopeLogs", "scope_logs"):
                for record in _items(scope_logs, "logRecords", "log_records"):
                    _hex_ids_to_base64(record)
                    count += 1
        check_count(count, limits)
        request = ExportLogsServiceRequest()
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    # ValueError: invalid UTF-8 inside a string (msgspec), a value protobuf's parser cannot
    # take; TypeError: a JSON type where the message wants another.
    except (
        msgspec.DecodeError,
        json_format.ParseError,
        RecursionError,
        ValueError,
        TypeError,
    ) as exc:
        raise Rejection(
            400, "malformed", f"the body is not an OTLP/JSON ExportLogsServiceRequest: {exc}"
        ) from None
    return request


def _items(parent: Any, *names: str) -> list[Any]:
    if not isinstance(parent, dict):
        return []
    for name in names:
        value = parent.get(name)
        if isinstance(value, list):
            return value
    return []


def _hex_ids_to_base64(record: Any) -> None:
    if not isinstance(record, dict):
        return
    for name in _ID_FIELDS:
        value = record.get(name)
        if isinstance(value, str) and value:
            try:
                record[name] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise json_format.ParseError(
                    f"{name} {value[:40]!r} is not hex (OTLP/JSON sends ids as hex strings)"
                ) from None
