"""The OTLP/HTTP logs door with real clients against a real server process: the OpenTelemetry
Python SDK's exporters (protobuf and JSON) through the standard ``logging`` bridge, each batch
sent twice as a retry after a lost answer would send it; then partial success, the topic
override, the response shapes and hostile bodies, built with the same maintained definitions."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.json.http._log_exporter import (
    OTLPLogExporter as JsonExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as ProtobufExporter,
)
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource

from tests.shippers import Door, fill_disk, shipper_server
from tests.support import wait_for

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON_TYPE = "application/json"
NS = 1_796_000_000_123_456_789  # 2026-11-30T00:53:20.123456789Z: nanoseconds below the microsecond


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with shipper_server(tmp_path_factory.mktemp("otlp")) as door:
        yield door
        door.assert_healthy()


class Keep(LogRecordExporter):
    """Keeps the records the SDK made, sending nothing: a test sends them when it chooses."""

    def __init__(self, into: list[ReadableLogRecord]) -> None:
        self.into = into

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.into.extend(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class Twice(LogRecordExporter):
    """Sends every batch twice with the real exporter, as a retry after a lost answer does;
    keeps what it sent."""

    def __init__(self, exporter: LogRecordExporter) -> None:
        self.exporter = exporter
        self.sent: list[ReadableLogRecord] = []
        self.results: list[LogRecordExportResult] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.sent.extend(batch)
        self.results += [self.exporter.export(batch), self.exporter.export(batch)]
        return self.results[-1]

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def log_through_sdk(exporter: LogRecordExporter, service: str, lines: list[dict[str, Any]]) -> None:
    provider = LoggerProvider(
        resource=Resource.create({"service.name": service, "host.name": "host-a"})
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"tests.otlp.{service}")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        for line in lines:
            logger.warning(line["message"], extra=line.get("extra"))
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_sdk_records_are_stored_once_when_sent_twice(door: Door, encoding: str) -> None:
    service = f"sdk-{encoding}"
    exporter_class = ProtobufExporter if encoding == "protobuf" else JsonExporter
    twice = Twice(exporter_class(endpoint=f"{door.url}/v1/logs"))
    before = door.counters()
    duplicates_before = door.metric(
        "aggregator_publish_events_total", protocol="otlp", result="duplicate"
    )
    log_through_sdk(
        twice,
        service,
        [
            {"message": "first", "extra": {"user": "u1"}},
            {"message": "with an id", "extra": {"log.record.uid": f"uid-{encoding}"}},
            {"message": "third"},
        ],
    )
    assert twice.results == [LogRecordExportResult.SUCCESS] * 6
    assert door.delta(before) == [6, 3, 3]
    events = door.events(service)
    assert [e["payload"]["body"] for e in events] == ["first", "with an id", "third"]
    first, with_id, _ = events
    assert (first["topic"], first["source"]) == (service, "host-a")
    assert first["payload"]["severity_text"] == "WARN"
    assert first["payload"]["attributes"]["user"] == "u1"
    assert first["payload"]["resource"]["service.name"] == service
    assert len(first["event_id"]) == 32  # a content hash: no log.record.uid was given
    assert with_id["event_id"] == f"uid-{encoding}"
    sent = twice.sent[0].log_record
    assert first["timestamp"].startswith(_iso(sent.timestamp or sent.observed_timestamp))
    assert (
        door.metric("aggregator_publish_events_total", protocol="otlp", result="duplicate")
        == duplicates_before + 3
    )


def test_one_record_as_protobuf_then_as_json_is_one_event(door: Door) -> None:
    """The id hashes the decoded record, not its bytes: the two encodings of one record agree."""
    kept = Twice(ProtobufExporter(endpoint=f"{door.url}/v1/logs"))
    log_through_sdk(kept, "cross-encoding", [{"message": "same record"}])
    before = door.counters()
    assert JsonExporter(endpoint=f"{door.url}/v1/logs").export(kept.sent).name == "SUCCESS"
    assert door.delta(before) == [1, 0, 1]


def _iso(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _request(*records: LogRecord, service: str | None = "built") -> ExportLogsServiceRequest:
    attributes = []
    if service is not None:
        attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=ResourcePb(attributes=attributes),
                scope_logs=[ScopeLogs(log_records=list(records))],
            )
        ]
    )


def _record(body: str, ns: int = NS, **fields: Any) -> LogRecord:
    return LogRecord(time_unix_nano=ns, body=AnyValue(string_value=body), **fields)


def test_values_that_share_a_json_form_are_different_records(door: Door) -> None:
    """Bytes are stored as base64, NaN, infinities and an unset value as null: bytes and the
    string of their base64, or NaN and +inf, were one event (the second dropped as a
    duplicate). Their ids now tell the types apart, in both encodings alike."""
    nan, inf = float("nan"), float("inf")
    bodies = {
        "bytes": AnyValue(bytes_value=b"abc"),
        "its base64": AnyValue(string_value="YWJj"),
        "nan": AnyValue(double_value=nan),
        "inf": AnyValue(double_value=inf),
        "-inf": AnyValue(double_value=-inf),
        "unset": AnyValue(),
    }
    records = [LogRecord(time_unix_nano=NS, body=body) for body in bodies.values()]
    records += [
        LogRecord(time_unix_nano=NS, attributes=[KeyValue(key="k", value=value)])
        for value in (AnyValue(bytes_value=b"abc"), AnyValue(string_value="YWJj"))
    ]
    nested = AnyValue()
    nested.array_value.values.add(bytes_value=b"abc")
    records.append(LogRecord(time_unix_nano=NS, body=nested))
    request = _request(*records, service="lossy-values")
    before = door.counters()
    response = door.http.post("/v1/logs", content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200
    assert door.delta(before) == [9, 9, 0]
    stored = door.events("lossy-values")
    assert [e["payload"].get("body") for e in stored[:6]] == [
        "YWJj",
        "YWJj",
        None,
        None,
        None,
        None,
    ]
    # The same records as OTLP/JSON (NaN and the infinities as protobuf's JSON names them).
    scalar = [
        {"bytesValue": "YWJj"},
        {"stringValue": "YWJj"},
        {"doubleValue": "NaN"},
        {"doubleValue": "Infinity"},
        {"doubleValue": "-Infinity"},
        {},
    ]
    as_json = [{"timeUnixNano": str(NS), "body": body} for body in scalar]
    as_json += [
        {"timeUnixNano": str(NS), "attributes": [{"key": "k", "value": value}]}
        for value in scalar[:2]
    ]
    as_json.append(
        {"timeUnixNano": str(NS), "body": {"arrayValue": {"values": [{"bytesValue": "YWJj"}]}}}
    )
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "lossy-values"}}]}
    body = {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": as_json}]}]}
    before = door.counters()
    assert door.http.post("/v1/logs", json=body).status_code == 200
    assert door.delta(before) == [9, 0, 9]
    # A record without such values keeps the id of its payload, as docs/otlp.md says.
    plain = _request(_record("plain", attributes=[KeyValue(key="n", value=AnyValue(int_value=7))]))
    response = door.http.post(
        "/v1/logs?topic=plain-id", content=plain.SerializeToString(), headers=PROTOBUF
    )
    assert response.status_code == 200
    [event] = door.events("plain-id")
    text = json.dumps(event["payload"], sort_keys=True, separators=(",", ":")).encode()
    expected = hashlib.blake2b(b"%d:0:" % NS + text, digest_size=16).hexdigest()
    assert event["event_id"] == expected


def test_partial_success_counts_the_records_that_cannot_be_events(door: Door) -> None:
    request = _request(
        _record("kept", trace_id=bytes(range(16)), span_id=bytes(range(8))),
        _record("no time at all", ns=0),
        _record("x" * 70_000),  # over the 64 KiB payload limit
        service="partial",
    )
    before = door.counters()
    response = door.http.post("/v1/logs", content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    answer = ExportLogsServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_log_records == 2
    assert "neither time_unix_nano nor observed_time_unix_nano" in (
        answer.partial_success.error_message
    )
    assert "AGGREGATOR_MAX_PAYLOAD_BYTES" in answer.partial_success.error_message
    assert door.delta(before) == [1, 1, 0]
    [event] = door.events("partial")
    assert event["timestamp"] == "2026-11-30T00:53:20.123456Z"
    assert event["payload"]["trace_id"] == bytes(range(16)).hex()
    assert event["payload"]["span_id"] == bytes(range(8)).hex()
    assert event["source"] == "partial"  # service.name: no host.name nor instance id

    json_response = door.http.post(
        "/v1/logs",
        json={"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "x"}}]}]}]},
    )
    assert json_response.status_code == 200
    assert json_response.json()["partialSuccess"]["rejectedLogRecords"] == 1


def test_a_fully_accepted_request_has_no_partial_success(door: Door) -> None:
    body = _request(_record("fine"), service="whole").SerializeToString()
    response = door.http.post("/v1/logs", content=body, headers=PROTOBUF)
    assert response.status_code == 200
    assert not ExportLogsServiceResponse.FromString(response.content).HasField("partial_success")
    json_body = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "whole"}}]
                },
                "scopeLogs": [
                    {"logRecords": [{"timeUnixNano": str(NS), "body": {"stringValue": "fine"}}]}
                ],
            }
        ]
    }
    before = door.counters()
    json_response = door.http.post("/v1/logs", json=json_body)
    assert (json_response.status_code, json_response.json()) == (200, {})
    assert door.delta(before) == [1, 0, 1]  # the protobuf record's twin in JSON


def test_topic_comes_from_the_query_then_the_header_then_service_name(door: Door) -> None:
    body = _request(_record("routed"), service="ignored").SerializeToString()
    by_query = door.http.post("/v1/logs?topic=by-query", content=body, headers=PROTOBUF)
    by_header = door.http.post(
        "/v1/logs", content=body, headers={**PROTOBUF, "X-Aggregator-Topic": "by-header"}
    )
    unnamed = door.http.post(
        "/v1/logs", content=_request(_record("anon"), service=None).SerializeToString(),
        headers=PROTOBUF,
    )  # fmt: skip
    assert [r.status_code for r in (by_query, by_header, unnamed)] == [200, 200, 200]
    assert len(door.events("by-query")) == len(door.events("by-header")) == 1
    assert door.events("ignored") == []
    assert [e["payload"]["body"] for e in door.events("otlp")] == ["anon"]
    bad = door.http.post("/v1/logs?topic=has space", content=body, headers=PROTOBUF)
    assert bad.status_code == 400
    assert "whitespace" in Status.FromString(bad.content).message


def test_a_utf8_topic_header_is_the_topic_of_the_query(door: Door) -> None:
    """The header's bytes are UTF-8, as the query's: 'café' was stored as the topic 'cafÃ©'."""
    body = _request(_record("accented"), service="ignored").SerializeToString()
    header = [("Content-Type", "application/x-protobuf"), ("X-Aggregator-Topic", "café-ü")]
    encoded = [(k, v.encode()) for k, v in header]
    by_header = door.http.post("/v1/logs", content=body, headers=encoded)
    assert by_header.status_code == 200
    assert [e["payload"]["body"] for e in door.events("café-ü")] == ["accented"]
    assert "cafÃ©-Ã¼" not in door.http.get("/stats").json()["topics"]
    latin1 = [(b"Content-Type", b"application/x-protobuf"), (b"X-Aggregator-Topic", b"caf\xe9")]
    _assert_refused(door, body, latin1, 400, "X-Aggregator-Topic header is not valid UTF-8")
    loki = door.http.post(
        "/loki/api/v1/push",
        json={"streams": [{"stream": {"job": "x"}, "values": [["1", "accented"]]}]},
        headers=[(b"X-Aggregator-Topic", "café-ü".encode())],
    )
    assert loki.status_code == 204
    assert [e["payload"].get("line") for e in door.events("café-ü")] == [None, "accented"]


def test_a_field_named_twice_is_refused(door: Door) -> None:
    """json_format keeps the last of ``resourceLogs`` and ``resource_logs``, the record count
    read the first: ``"resourceLogs": []`` then 1.3 million records passed the count and cost
    17 s of parsing; a ``trace_id`` beside ``traceId`` was read as base64, not hex."""
    json_headers = {"Content-Type": "application/json"}
    many = b",".join([b"{}"] * 1_300_000)
    body = b'{"resourceLogs":[],"resource_logs":[{"scopeLogs":[{"logRecords":[%s]}]}]}' % many
    started = time.monotonic()
    _assert_refused(door, body, json_headers, 400, "resourceLogs is given twice")
    assert time.monotonic() - started < 8  # refused before json_format reads a record
    record = {"timeUnixNano": str(NS), "traceId": "0102", "trace_id": "0304"}
    scopes = [{"scopeLogs": [], "scope_logs": [{"logRecords": [record]}]}]
    twice = json.dumps({"resourceLogs": scopes}).encode()
    _assert_refused(door, twice, json_headers, 400, "scopeLogs is given twice")
    scopes = [{"scopeLogs": [{"logRecords": [record]}]}]
    twice = json.dumps({"resourceLogs": scopes}).encode()
    _assert_refused(door, twice, json_headers, 400, "traceId is given twice")


def test_a_million_values_cost_as_json_about_what_they_cost_as_protobuf(door: Door) -> None:
    """One record whose body is an array of 1.3 million empty values (3.9 MB, or 4 KB of gzip):
    json_format took 13 s of one of the two decode threads for it on an idle machine, eight
    times the same record as protobuf. The values are built by otlp_values now: about twice.
    Timed against the protobuf twin, back to back, so that a loaded machine slows both; the
    best of three pairs (one pair failed a CI run at 4.3× with other work on the machine)."""
    values = b",".join([b"{}"] * 1_300_000)
    record = b'{"timeUnixNano":"%d","body":{"arrayValue":{"values":[%s]}}}' % (NS, values)
    as_json = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[%s]}]}]}' % record
    twin = LogRecord(time_unix_nano=NS)
    twin.body.array_value.values.extend(AnyValue() for _ in range(1_300_000))
    as_protobuf = _request(twin).SerializeToString()
    pairs = [(as_protobuf, PROTOBUF), (as_json, {"Content-Type": JSON_TYPE})]
    compressed = [(gzip.compress(body), content_type) for body, content_type in pairs]
    elapsed: list[list[float]] = [[], []]
    for _ in range(3):
        for times, (body, content_type) in zip(elapsed, compressed, strict=True):
            headers = {**content_type, "Content-Encoding": "gzip"}
            started = time.monotonic()
            response = door.http.post("/v1/logs", content=body, headers=headers)
            times.append(time.monotonic() - started)
            assert response.status_code == 200
            assert "MAX_PAYLOAD_BYTES" in _partial_success(response)
    protobuf_seconds, json_seconds = min(elapsed[0]), min(elapsed[1])
    assert json_seconds < 4 * protobuf_seconds, elapsed
    door.assert_healthy()


def test_a_resource_over_the_payload_limit_is_not_encoded_once_a_record(door: Door) -> None:
    """Each record's payload holds its resource: a 4 MB resource with 1000 records (6 KiB of
    gzip) cost 4.4 s of encoding 1000 payloads of 4 MB to refuse each; now the resource's size
    alone refuses them (0.3 s, most of it the gunzip and the parse). Timed against the same
    request with one record, which encodes one payload, so that a loaded machine slows both."""
    big = KeyValue(key="big", value=AnyValue(string_value="y" * 4_000_000))
    elapsed = []
    for count in (1, 1000):
        request = _request(*(_record(f"r{i}", NS + i) for i in range(count)), service="big")
        request.resource_logs[0].resource.attributes.append(big)
        headers = {**PROTOBUF, "Content-Encoding": "gzip"}
        body = gzip.compress(request.SerializeToString())
        before = door.counters()
        started = time.monotonic()
        response = door.http.post("/v1/logs", content=body, headers=headers)
        elapsed.append(time.monotonic() - started)
        partial = ExportLogsServiceResponse.FromString(response.content).partial_success
        assert (response.status_code, partial.rejected_log_records) == (200, count)
        assert "AGGREGATOR_MAX_PAYLOAD_BYTES" in partial.error_message
        assert door.delta(before) == [0, 0, 0]
    one, thousand = elapsed
    assert thousand < 4 * one + 1, elapsed


def _partial_success(response: Any) -> str:
    if response.headers["content-type"] == JSON_TYPE:
        return str(response.json()["partialSuccess"]["errorMessage"])
    return ExportLogsServiceResponse.FromString(response.content).partial_success.error_message


def _assert_refused(door: Door, body: bytes, headers: Any, status: int, words: str) -> None:
    before = door.counters()
    response = door.http.post("/v1/logs", content=body, headers=headers)
    assert response.status_code == status, response.text
    if response.headers["content-type"] == "application/json":
        message = response.json()["message"]
    else:
        message = Status.FromString(response.content).message
    assert words in message
    assert door.delta(before) == [0, 0, 0]


def _field(number: int, value: bytes) -> bytes:
    """One length-delimited protobuf field, written by hand: the library refuses to build a
    message nested this deep, and that is the point."""
    length, size = b"", len(value)
    while True:
        length += bytes([(size & 0x7F) | (0x80 if size > 0x7F else 0)])
        size >>= 7
        if not size:
            break
    return bytes([number << 3 | 2]) + length + value


def _nested_body(depth: int) -> bytes:
    value = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(depth):  # AnyValue.array_value (5) → ArrayValue.values (1) → AnyValue
        value = _field(5, _field(1, value))
    record = _field(5, value)  # LogRecord.body
    return _field(1, _field(2, _field(2, record)))  # request → resource_logs → scope_logs


def test_hostile_bodies_are_refused_whole_with_the_reason(door: Door) -> None:
    good = _request(*(_record(f"r{i}") for i in range(20)), service="hostile").SerializeToString()
    _assert_refused(door, good[:-7], PROTOBUF, 400, "not a protobuf ExportLogsServiceRequest")
    _assert_refused(door, b"\xff" * 64, PROTOBUF, 400, "not a protobuf")
    _assert_refused(
        door, b'{"resourceLogs": [', {"Content-Type": "application/json"}, 400, "not an OTLP/JSON"
    )
    _assert_refused(
        door,
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}',
        {"Content-Type": "application/json"},
        400,
        "is not hex",
    )
    json_type = {"Content-Type": "application/json"}
    _assert_refused(door, b"5", json_type, 400, "must be a JSON object")  # was a 500
    _assert_refused(
        door, b'{"resourceLogs": [{"resource": {"attributes": [{"key": "k", "value": '
        b'{"stringValue": "\xff"}}]}}]}', json_type, 400, "not an OTLP/JSON",
    )  # fmt: skip
    many = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{}] * 1001}]}]}
    _assert_refused(door, json.dumps(many).encode(), json_type, 413, "the limit is 1000")
    _assert_refused(door, good, {"Content-Type": "text/plain"}, 415, "application/x-protobuf")
    bomb = gzip.compress(b"\0" * (5 * 1024 * 1024))
    _assert_refused(door, bomb, {**PROTOBUF, "Content-Encoding": "gzip"}, 413, "decompressed")
    _assert_refused(
        door, good, {**PROTOBUF, "Content-Encoding": "br"}, 415, "Content-Encoding 'br'"
    )
    too_many = _request(*(_record(f"n{i}") for i in range(1001)), service="hostile")
    _assert_refused(
        door, too_many.SerializeToString(), PROTOBUF, 413, "AGGREGATOR_MAX_BATCH_EVENTS"
    )
    _assert_refused(door, _nested_body(300), PROTOBUF, 400, "not a protobuf")
    over = door.http.post("/v1/logs", content=b"\0" * (4 * 1024 * 1024 + 1), headers=PROTOBUF)
    assert over.status_code == 413
    assert door.events("hostile") == []
    gzipped = door.http.post(
        "/v1/logs", content=gzip.compress(good), headers={**PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert gzipped.status_code == 200
    assert len(door.events("hostile")) == 20
    assert door.metric("aggregator_publish_rejected_total", reason="malformed", protocol="otlp") > 0
    door.assert_healthy()


def test_the_sdk_retries_a_503_and_its_records_are_stored_once(tmp_path: Path) -> None:
    """The disk fills up (the server's RLIMIT_FSIZE, lowered from outside as in test_faults.py):
    the door answers 503 with Retry-After, the SDK's exporter waits and retries on its own, and
    once space returns its records are stored, once each."""
    with shipper_server(tmp_path, "--probe-seconds", "0.05") as door:
        give_back = fill_disk(door, tmp_path)
        exporter = ProtobufExporter(endpoint=f"{door.url}/v1/logs", timeout=60)
        outcome: list[LogRecordExportResult] = []
        records: list[ReadableLogRecord] = []
        # More bytes than the room left (under 256 KiB): this export cannot commit until then.
        lines = [{"message": f"r{i} " + "y" * 4000} for i in range(100)]
        log_through_sdk(Keep(records), "retried", lines)
        sender = threading.Thread(target=lambda: outcome.append(exporter.export(records)))
        sender.start()
        try:
            wait_for(
                lambda: (
                    door.metric(
                        "aggregator_publish_rejected_total", reason="unavailable", protocol="otlp"
                    )
                    >= 1
                ),
                "the door to answer the SDK 503",
            )
        finally:
            give_back()
        sender.join(timeout=60)
        assert outcome == [LogRecordExportResult.SUCCESS]
        assert [e["payload"]["body"] for e in door.events("retried")] == [
            line["message"] for line in lines
        ]
        assert door.metric(
            "aggregator_publish_events_total", protocol="otlp", result="stored"
        ) == len(lines)
        door.assert_healthy()


def test_a_body_over_the_limit_as_received_is_counted_under_its_door(door: Door) -> None:
    """Refused while it arrives, before the door's route runs: it was missing from /metrics."""
    name = "aggregator_publish_rejected_total"
    for path, protocol in (("/v1/logs", "otlp"), ("/loki/api/v1/push", "loki")):
        before = door.metric(name, protocol=protocol, reason="too_large")
        response = door.http.post(path, content=b"\0" * (4 * 1024 * 1024 + 1), headers=PROTOBUF)
        assert response.status_code == 413
        assert "AGGREGATOR_MAX_BODY_BYTES" in response.json()["message"]
        assert door.metric(name, protocol=protocol, reason="too_large") == before + 1
