"""Events/s through the OTLP/HTTP and Loki push doors beside ``POST /publish``:
``python -m bench.shippers`` (``make bench-otlp``, ``make bench-loki``, ``make bench-shippers``).

Each round starts a fresh server (a subprocess, ``synchronous=FULL``) per row and drives it for
``--duration`` seconds with ``--clients`` closed-loop connections (the simulator's lean HTTP
client), 100 records per request over 8 topics, unique records, every body encoded before the
clock starts; a record counts once its request is acknowledged (200 / 204), and ``/stats`` must
then hold exactly the records acknowledged. Bodies are shaped as the real clients send them:
OTLP with the resource the OpenTelemetry SDK sends (``service.name``, ``host.name``,
``telemetry.sdk.*``) and a scope; Loki as one stream of 100 entries with two labels, protobuf
snappy-compressed as Promtail sends it.

Ratios are computed within a round (this machine's speed drifts); the table shows medians.
"""

from __future__ import annotations

import statistics
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import cramjam
import httpx
import msgspec
import trio
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from aggregator.decoders.proto.loki_push_pb2 import EntryAdapter, PushRequest, StreamAdapter
from bench.http import drive_http, load_parser
from bench.syslog import BATCH, TOPICS, publish_bodies
from simulator.procs import running

ROOT = Path(__file__).resolve().parent.parent
NS = 1_796_000_000_000_000_000
JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _text(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def otlp_requests(count: int) -> list[ExportLogsServiceRequest]:
    out = []
    for n in range(count):
        resource = Resource(
            attributes=[
                _text("service.name", f"topic-{n % TOPICS}"),
                _text("host.name", "bench"),
                _text("telemetry.sdk.language", "python"),
                _text("telemetry.sdk.name", "opentelemetry"),
                _text("telemetry.sdk.version", "1.45.2"),
            ]
        )
        records = [
            LogRecord(
                time_unix_nano=NS + n * BATCH + i,
                observed_time_unix_nano=NS + n * BATCH + i,
                severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
                severity_text="INFO",
                body=AnyValue(string_value=f"payment {n}-{i} ok {uuid.uuid4()}"),
                attributes=[_text("user", f"u{i}")],
            )
            for i in range(BATCH)
        ]
        scope = ScopeLogs(scope=InstrumentationScope(name="bench"), log_records=records)
        out.append(
            ExportLogsServiceRequest(
                resource_logs=[ResourceLogs(resource=resource, scope_logs=[scope])]
            )
        )
    return out


def loki_pushes(count: int) -> list[PushRequest]:
    out = []
    for n in range(count):
        entries = []
        for i in range(BATCH):
            entry = EntryAdapter(line=f"payment {n}-{i} ok {uuid.uuid4()}")
            entry.timestamp.FromNanoseconds(NS + n * BATCH + i)
            entries.append(entry)
        labels = f'{{service_name="topic-{n % TOPICS}", host="bench"}}'
        out.append(PushRequest(streams=[StreamAdapter(labels=labels, entries=entries)]))
    return out


def loki_json(push: PushRequest) -> bytes:
    streams = [
        {
            "stream": {"service_name": s.labels.split('"')[1], "host": "bench"},
            "values": [[str(e.timestamp.ToNanoseconds()), e.line] for e in s.entries],
        }
        for s in push.streams
    ]
    return msgspec.json.encode({"streams": streams})


# row: (label, path, headers, bodies of `count` requests)
ROWS: dict[str, tuple[str, str, dict[str, str], Callable[[int], list[bytes]]]] = {
    "publish": ("POST /publish (JSON)", "/publish", JSON, publish_bodies),
    "otlp-protobuf": (
        "POST /v1/logs (OTLP protobuf)",
        "/v1/logs",
        PROTOBUF,
        lambda count: [r.SerializeToString() for r in otlp_requests(count)],
    ),
    "otlp-json": (
        "POST /v1/logs (OTLP JSON)",
        "/v1/logs",
        JSON,
        lambda count: [json_format.MessageToJson(r).encode() for r in otlp_requests(count)],
    ),
    "loki-protobuf": (
        "POST /loki/api/v1/push (protobuf + snappy)",
        "/loki/api/v1/push",
        PROTOBUF,
        lambda count: [
            bytes(cramjam.snappy.compress_raw(p.SerializeToString())) for p in loki_pushes(count)
        ],
    ),
    "loki-json": (
        "POST /loki/api/v1/push (JSON)",
        "/loki/api/v1/push",
        JSON,
        lambda count: [loki_json(p) for p in loki_pushes(count)],
    ),
}
SETS = {
    "otlp": ["publish", "otlp-protobuf", "otlp-json"],
    "loki": ["publish", "loki-protobuf", "loki-json"],
    "all": list(ROWS),
}


async def drive(
    url: str, path: str, headers: dict[str, str], pool: list[bytes], clients: int, seconds: float
) -> float:
    """Acknowledged records per second over ``seconds``."""
    return await drive_http(
        url, path, pool, per_body=BATCH, clients=clients, seconds=seconds, headers=headers,
        ok=(200, 204),
    )  # fmt: skip


def run(row: str, clients: int, seconds: float, work: Path) -> tuple[float, int]:
    """records/s of one row on a fresh server, and the events it stored (checked in /stats)."""
    _, path, headers, bodies = ROWS[row]
    pool = bodies(int(seconds * 700))  # more than a run can send at ~70k records/s
    args = ["--port", "0", "--data-dir", str(work / row), "--synchronous", "full"]
    with running("aggregator", args, ROOT) as child:
        rate = trio.run(drive, child.url, path, headers, pool, clients, seconds)
        stats = httpx.get(child.url + "/stats").json()
    if stats["unique_processed"] != stats["received"]:
        raise RuntimeError(f"{row}: unique records were counted as duplicates: {stats}")
    return rate, stats["unique_processed"]


def main() -> None:
    parser = load_parser(__doc__.split("\n\n")[0], "concurrent connections of each door")
    parser.add_argument("--doors", choices=sorted(SETS), default="all")
    args = parser.parse_args()
    rows = SETS[args.doors]
    rates: dict[str, list[float]] = {row: [] for row in rows}
    for n in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            for row in rows:
                rate, stored = run(row, args.clients, args.duration, Path(tmp) / str(n))
                rates[row].append(rate)
                print(f"round {n + 1}: {row} {rate:,.0f} records/s ({stored:,} stored)", flush=True)
    print(f"\n| door, 100 records a request, {args.clients} connections | records/s (median of "
          f"{args.rounds}) | ÷ /publish (median; rounds) |")  # fmt: skip
    print("| --- | ---: | --- |")
    for row in rows:
        shown = "–"
        if row != "publish":
            each = [a / b for a, b in zip(rates[row], rates["publish"], strict=True)]
            shown = f"{statistics.median(each):.0%} ({', '.join(f'{r:.0%}' for r in each)})"
        print(f"| {ROWS[row][0]} | {statistics.median(rates[row]):,.0f} | {shown} |")


if __name__ == "__main__":
    main()
