"""``python -m fuzz.make_seeds``: writes the seed bodies of the shipper doors that are not text
(``fuzz/corpus/{bulk,otlp,loki}/``): OTLP protobuf, Loki snappy-compressed protobuf, their JSON
forms and gzip. The files are checked in; run this again only to change them (the output is the
same byte for byte each time: fixed times, no random ids, gzip without a time stamp).
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import cramjam
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import (
    LogRecord,
    ResourceLogs,
    ScopeLogs,
    SeverityNumber,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from aggregator.decoders.proto.loki_push_pb2 import (
    EntryAdapter,
    LabelPairAdapter,
    PushRequest,
    StreamAdapter,
)

CORPUS = Path(__file__).resolve().parent / "corpus"
NS = 1_764_460_800_123_456_789  # 2025-11-30T00:00:00.123456789Z


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _snappy(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def _text(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def otlp_full() -> ExportLogsServiceRequest:
    """Every field the mapping reads: two resources, scopes with attributes, each AnyValue kind,
    ids, severity, flags, both times, a log.record.uid."""
    nested = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key="n", value=AnyValue(int_value=-7)),
                KeyValue(key="ok", value=AnyValue(bool_value=True)),
                KeyValue(key="ratio", value=AnyValue(double_value=0.25)),
                KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\xff")),
                KeyValue(key="none", value=AnyValue()),
                KeyValue(
                    key="list",
                    value=AnyValue(
                        array_value=ArrayValue(
                            values=[AnyValue(string_value="a"), AnyValue(int_value=2)]
                        )
                    ),
                ),
            ]
        )
    )
    first = ResourceLogs(
        resource=Resource(
            attributes=[_text("service.name", "checkout"), _text("host.name", "web-1")]
        ),
        scope_logs=[
            ScopeLogs(
                scope=InstrumentationScope(
                    name="app.logger", version="1.2", attributes=[_text("lib", "x")]
                ),
                log_records=[
                    LogRecord(
                        time_unix_nano=NS,
                        observed_time_unix_nano=NS + 1000,
                        severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
                        severity_text="INFO",
                        event_name="order.paid",
                        body=AnyValue(string_value="payment ok"),
                        attributes=[_text("user", "u1"), KeyValue(key="detail", value=nested)],
                        trace_id=bytes(range(16)),
                        span_id=bytes(range(8)),
                        flags=1,
                    ),
                    LogRecord(
                        observed_time_unix_nano=NS + 2000,
                        body=nested,
                        attributes=[_text("log.record.uid", "uid-0001")],
                    ),
                ],
            ),
            ScopeLogs(log_records=[LogRecord(time_unix_nano=NS + 3000)]),
        ],
    )
    second = ResourceLogs(
        resource=Resource(attributes=[_text("service.instance.id", "i-9")]),
        scope_logs=[
            ScopeLogs(
                log_records=[
                    LogRecord(time_unix_nano=NS + 4000, body=AnyValue(string_value="no service"))
                ]
            )
        ],
    )
    return ExportLogsServiceRequest(resource_logs=[first, second])


def otlp_partial() -> ExportLogsServiceRequest:
    """A valid request with records refused alone (partial success): no time, a blank uid."""
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=[_text("service.name", "billing")]),
                scope_logs=[
                    ScopeLogs(
                        log_records=[
                            LogRecord(time_unix_nano=NS, body=AnyValue(string_value="kept")),
                            LogRecord(body=AnyValue(string_value="no time")),
                            LogRecord(time_unix_nano=NS, attributes=[_text("log.record.uid", " ")]),
                        ]
                    )
                ],
            )
        ]
    )


def otlp_minimal() -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord(time_unix_nano=NS)])])
        ]
    )


def otlp_json(request: ExportLogsServiceRequest, *, snake: bool = False) -> bytes:
    """OTLP/JSON: protobuf's JSON mapping with trace and span ids as hex."""
    document = json_format.MessageToDict(request, preserving_proto_field_name=snake)
    for resource_logs in document.get("resource_logs" if snake else "resourceLogs", []):
        for scope_logs in resource_logs.get("scope_logs" if snake else "scopeLogs", []):
            for record in scope_logs.get("log_records" if snake else "logRecords", []):
                for name in ("trace_id", "span_id") if snake else ("traceId", "spanId"):
                    if name in record:
                        record[name] = base64.b64decode(record[name]).hex()
    return json.dumps(document, indent=None if snake else 1).encode()


def _entry(ns: int, line: str, metadata: dict[str, str] | None = None) -> EntryAdapter:
    entry = EntryAdapter(
        line=line,
        structuredMetadata=[LabelPairAdapter(name=k, value=v) for k, v in (metadata or {}).items()],
    )
    entry.timestamp.FromNanoseconds(ns)
    return entry


def loki_push() -> PushRequest:
    """Streams named by each topic label and source label, escapes in label values, structured
    metadata, and a stream without topic or source labels."""
    return PushRequest(
        streams=[
            StreamAdapter(
                labels='{service_name="checkout", host="web-1", note="a \\"q\\"\\n\\\\"}',
                entries=[
                    _entry(NS, "payment ok", {"trace_id": "0af7651916cd43dd"}),
                    _entry(NS + 1, "payment ok"),
                ],
            ),
            StreamAdapter(labels='{job="varlogs",hostname="h2"}', entries=[_entry(NS, "line")]),
            StreamAdapter(
                labels=' { app = "a1" , instance = "10.0.0.1:9100" } ',
                entries=[_entry(NS + 5, "")],
            ),
            StreamAdapter(labels='{level="warn"}', entries=[_entry(0, "at the epoch")]),
        ]
    )


def loki_json() -> bytes:
    return json.dumps(
        {
            "streams": [
                {
                    "stream": {"service_name": "checkout", "host": "web-1"},
                    "values": [
                        [str(NS), "payment ok"],
                        [str(NS + 1), "with metadata", {"trace_id": "0af7651916cd43dd"}],
                    ],
                },
                {"stream": {"job": "varlogs"}, "values": [[NS + 2, "an integer time"]]},
                {"stream": {"level": "warn"}, "values": []},
            ]
        }
    ).encode()


BULK_LINES: tuple[dict[str, Any], ...] = (
    {"create": {"_index": "web", "_id": "1"}},
    {"@timestamp": "2026-11-30T10:00:00.5Z", "host": {"name": "web-1"}, "message": "a"},
    {"index": {"_index": "web"}},
    {"@timestamp": 1764496800000, "service": {"name": "api"}, "message": "b"},
    {"create": {}},
    {"timestamp": "2026-11-30T10:00:00+02:00", "agent": {"name": "beat"}, "msg": "c"},
)
BULK_USUAL = b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in BULK_LINES)
BULK_MIXED = (
    b'{"create":{"_index":"web","_id":7}}\n'
    b'{"host":"web-2","message":"an integer _id"}\n'
    b"\n"
    b'{"index":{"_index":"web","_id":""}}\n'
    b'{"host":{"hostname":"h"},"message":"rsyslog sends an empty _id"}\n'
    b"\n"
    b'{"delete":{"_index":"web","_id":"1"}}\n'
    b'{"update":{"_index":"web","_id":"1"}}\n'
    b'{"doc":{"message":"x"}}\n'
    b'{"create":{"_index":"bad index"}}\n'
    b'{"message":"refused alone: the index has a space"}\n'
    b'{"index":{"_id":"  "}}\n'
    b'{"message":"refused alone: a blank _id"}\n'
    b'{"create":{"_index":"web","_id":"9","routing":"r","_type":"_doc"}}\n'
    b'  {"message": "spaced", "tags": ["a", {"b": null}], "n": 1.5e3}  \n'
)


def bulk() -> dict[str, bytes]:
    return {
        "usual.ndjson": BULK_USUAL,
        "usual.json": BULK_USUAL,
        "usual.untyped.ndjson": BULK_USUAL,
        "usual.vnd.ndjson": BULK_USUAL,
        "usual.ndjson.gz": _gz(BULK_USUAL),
        "mixed.ndjson": BULK_MIXED,
        "mixed.ndjson.gz": _gz(BULK_MIXED[:200]) + _gz(BULK_MIXED[200:]),  # two members
        "crlf.ndjson": b"\xef\xbb\xbf" + BULK_MIXED.replace(b"\n", b"\r\n"),
    }


def otlp() -> dict[str, bytes]:
    full, partial, minimal = otlp_full(), otlp_partial(), otlp_minimal()
    return {
        "full.pb": full.SerializeToString(),
        "partial.pb": partial.SerializeToString(),
        "minimal.alt.pb": minimal.SerializeToString(),
        "full.pb.gz": _gz(full.SerializeToString()),
        "full.json": otlp_json(full),
        "snake.json": otlp_json(full, snake=True),
        "partial.json": otlp_json(partial),
        "minimal.json.gz": _gz(otlp_json(minimal)),
    }


def loki() -> dict[str, bytes]:
    push = loki_push().SerializeToString()
    return {
        "push.pb.snappy": _snappy(push),
        "push.pb.snappy.gz": _gz(_snappy(push)),
        "push.json": loki_json(),
        "push.json.gz": _gz(loki_json()),
        "push.topic.json": loki_json(),
    }


def main() -> None:
    for name, files in (("bulk", bulk()), ("otlp", otlp()), ("loki", loki())):
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for file, body in files.items():
            (folder / file).write_bytes(body)
        print(f"{folder}: {len(files)} seeds")


if __name__ == "__main__":
    main()
