"""The decoders under fuzzing: one entry per wire decoder.

Adding a decoder (``aggregator/decoders/``) to the fuzzers means adding one ``Target`` to
``TARGETS``: the decoder, the request headers each kind of seed body is sent with, and valid
bodies in ``fuzz/corpus/<name>/``, one file per shape and content type. A seed's kind is its file
name after the first dot (``wrapper.json.gz`` is of kind ``json.gz``). Both fuzzers pick the
target up from here: the coverage-guided one (``python -m fuzz.decoders``) and the campaign
against a real server (``python -m fuzz.server``), which posts to ``route`` and judges each
answer with the target's ``expect`` and ``read`` (``fuzz/answers.py``); a target without them is
left out of the campaign.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cramjam
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from aggregator.decoders.loki import decode_loki
from aggregator.decoders.otlp import decode_otlp
from aggregator.decoders.proto.loki_push_pb2 import PushRequest, StreamAdapter
from aggregator.decoders.publish import decode_publish
from aggregator.messages import Decoder, Limits
from fuzz import answers
from fuzz.contract import Outcome

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
REGRESSIONS = HERE / "regressions"

# Small limits, so that short runs reach every limit's path (413s, a payload over its size).
LIMITS = Limits(max_body_bytes=65536, max_batch_events=16, max_payload_bytes=512)

JSON = "application/json"
NDJSON = "application/x-ndjson"
PROTOBUF = "application/x-protobuf"

# The answer a door gives: (body, headers, limits, the decoder's outcome, per event whether it is
# new to the server) -> (status, the body as ``read`` gives it back).
Expect = Callable[[bytes, Mapping[str, str], Limits, Outcome, list[bool]], tuple[int, Any]]
# (status, content type, content) -> the answer's body in the form ``expect`` predicts.
Read = Callable[[int, str, bytes], Any]


@dataclass(frozen=True)
class Target:
    name: str
    decode: Decoder
    route: str
    # Seed kind (a file name's suffix after its first dot) -> the headers it is sent with
    # (lower-case names, as the front hands them to a decoder). Every kind has a seed.
    kinds: Mapping[str, Mapping[str, str]]
    # True only for a protocol whose valid request may carry no event at all.
    allows_empty: bool = False
    # Optional: a new valid body (its kind and bytes), so the server campaign sends fresh
    # events and not only the seeds again; without it, seeds are its valid publishes.
    fresh: Callable[[random.Random], tuple[str, bytes]] | None = None
    # The door's answer to each outcome, for the server campaign (``fuzz/answers.py``).
    expect: Expect | None = None
    read: Read | None = None
    # How the protocol frames a body of content type ``framed[0]`` (Loki: snappy around the
    # protobuf): an input's bit 7 asks the harness to frame the body itself, as for gzip.
    framed: tuple[str, Callable[[bytes], bytes]] | None = None

    @property
    def seeds(self) -> Path:
        return CORPUS / self.name

    @property
    def regressions(self) -> Path:
        return REGRESSIONS / self.name


def kind_of(path: Path) -> str:
    return path.name.split(".", 1)[1] if "." in path.name else ""


def fresh_publish(rng: random.Random) -> tuple[str, bytes]:
    """A valid POST /publish body of 1–6 events, ids drawn from a small space (so that later
    requests repeat earlier events), in a random shape, content type and encoding."""
    events = [
        {
            "topic": rng.choice(("auth", "orders", "pay.ment", "métriques")),
            "event_id": f"e{rng.randrange(3000)}",
            "timestamp": rng.choice(("2026-11-21T10:00:00Z", "2026-11-21 12:00:00.5+02:00")),
            "source": "fuzz",
            "payload": {"n": rng.randrange(100), "s": "x" * rng.randrange(40)},
        }
        for _ in range(rng.randint(1, 6))
    ]
    kind = rng.choice(("json", "json.gz", "ndjson", "ndjson.gz", "charset.json", "vnd.json"))
    if "ndjson" in kind:
        body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    elif len(events) == 1 and rng.random() < 0.5:
        body = json.dumps(events[0]).encode()
    else:
        body = json.dumps(events if rng.random() < 0.5 else {"events": events}).encode()
    if kind.endswith(".gz"):
        half = rng.randint(0, len(body)) if rng.random() < 0.3 else len(body)  # 2 members
        body = gzip.compress(body[:half], mtime=0) + (
            gzip.compress(body[half:], mtime=0) if half < len(body) else b""
        )
    return kind, body


def _gzip_maybe(kind: str, body: bytes) -> bytes:
    return gzip.compress(body, mtime=0) if kind.endswith(".gz") else body


def fresh_bulk(rng: random.Random) -> tuple[str, bytes]:
    """1–6 create or index items, ids from a small space (or none: a content id), the index
    from the action or the URL."""
    lines: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 6)):
        meta: dict[str, Any] = {"_index": rng.choice(("web", "api"))} if rng.random() < 0.5 else {}
        if rng.random() < 0.8:
            meta["_id"] = f"b{rng.randrange(3000)}"
        lines.append({rng.choice(("create", "index")): meta})
        lines.append({"host": {"name": "fuzz"}, "message": "x" * rng.randrange(40)})
    kind = rng.choice(("ndjson", "ndjson.gz", "json"))
    return kind, _gzip_maybe(kind, b"".join(json.dumps(x).encode() + b"\n" for x in lines))


def fresh_otlp(rng: random.Random) -> tuple[str, bytes]:
    """1–6 records of one service, times from a small space (the id is a content hash, so
    later requests repeat earlier records), as protobuf or OTLP/JSON."""
    records = [
        {
            "timeUnixNano": str(1_764_460_800_000_000_000 + rng.randrange(3000)),
            "body": {"stringValue": "x" * rng.randrange(3)},
        }
        for _ in range(rng.randint(1, 6))
    ]
    service = {"key": "service.name", "value": {"stringValue": rng.choice(("checkout", "api"))}}
    document = {
        "resourceLogs": [
            {"resource": {"attributes": [service]}, "scopeLogs": [{"logRecords": records}]}
        ]
    }
    kind = rng.choice(("pb", "pb.gz", "json", "json.gz"))
    if kind.startswith("pb"):
        body = json_format.ParseDict(document, ExportLogsServiceRequest()).SerializeToString()
    else:
        body = json.dumps(document).encode()
    return kind, _gzip_maybe(kind, body)


def fresh_loki(rng: random.Random) -> tuple[str, bytes]:
    """A push of 1–6 entries, times and lines from a small space, snappy protobuf or JSON."""
    job = rng.choice(("varlogs", "api"))
    entries = [(1_764_460_800_000_000_000 + rng.randrange(1000), f"l{rng.randrange(3)}")
               for _ in range(rng.randint(1, 6))]  # fmt: skip
    kind = rng.choice(("pb.snappy", "pb.snappy.gz", "json", "json.gz"))
    if kind.startswith("pb"):
        push = PushRequest(streams=[StreamAdapter(labels=f'{{job="{job}"}}')])
        for ns, line in entries:
            entry = push.streams[0].entries.add(line=line)
            entry.timestamp.FromNanoseconds(ns)
        body = bytes(cramjam.snappy.compress_raw(push.SerializeToString()))
    else:
        values = [[str(ns), line] for ns, line in entries]
        body = json.dumps({"streams": [{"stream": {"job": job}, "values": values}]}).encode()
    return kind, _gzip_maybe(kind, body)


TARGETS: tuple[Target, ...] = (
    Target(
        name="publish",
        decode=decode_publish,
        route="/publish",
        kinds={
            "json": {"content-type": JSON},
            "ndjson": {"content-type": NDJSON},
            "json.gz": {"content-type": JSON, "content-encoding": "gzip"},
            "ndjson.gz": {"content-type": NDJSON, "content-encoding": "gzip"},
            "untyped.json": {},
            "charset.json": {"content-type": "application/json; charset=utf-8"},
            "vnd.json": {"content-type": "application/vnd.example.events+json"},
            "upper.ndjson": {"content-type": "Application/X-NDJSON ; charset=UTF-8"},
            "xgzip.json": {"content-type": JSON, "content-encoding": "x-gzip"},
            "identity.ndjson": {"content-type": NDJSON, "content-encoding": "Identity"},
        },
        fresh=fresh_publish,
        expect=answers.expect_publish,
        read=answers.read_json,
    ),
    Target(
        name="bulk",
        decode=answers.decode_bulk_request,
        route=f"/{answers.BULK_INDEX}/_bulk",
        kinds={
            "ndjson": {"content-type": NDJSON},
            "json": {"content-type": JSON},
            "untyped.ndjson": {},
            "vnd.ndjson": {
                "content-type": "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
            },
            "ndjson.gz": {"content-type": NDJSON, "content-encoding": "gzip"},
        },
        # Every item refused or a delete: 200 with an error per item, no event.
        allows_empty=True,
        fresh=fresh_bulk,
        expect=answers.expect_bulk,
        read=answers.read_bulk,
    ),
    Target(
        name="otlp",
        decode=decode_otlp,
        route="/v1/logs",
        kinds={
            "pb": {"content-type": PROTOBUF},
            "alt.pb": {"content-type": "application/protobuf"},
            "pb.gz": {"content-type": PROTOBUF, "content-encoding": "gzip"},
            "json": {"content-type": JSON},
            "json.gz": {"content-type": JSON, "content-encoding": "gzip"},
        },
        # No record, or every record refused alone: 200 with partial_success.
        allows_empty=True,
        fresh=fresh_otlp,
        expect=answers.expect_otlp,
        read=answers.read_otlp,
    ),
    Target(
        name="loki",
        decode=decode_loki,
        route="/loki/api/v1/push",
        kinds={
            "pb.snappy": {"content-type": PROTOBUF},
            "pb.snappy.gz": {"content-type": PROTOBUF, "content-encoding": "gzip"},
            "json": {"content-type": JSON},
            "json.gz": {"content-type": JSON, "content-encoding": "gzip"},
            "topic.json": {"content-type": JSON, "x-aggregator-topic": "pushed"},
        },
        # A push of streams without entries: 204, as Loki answers it.
        allows_empty=True,
        fresh=fresh_loki,
        expect=answers.expect_loki,
        read=answers.read_text,
        framed=(PROTOBUF, lambda raw: bytes(cramjam.snappy.compress_raw(raw))),
    ),
)

# Headers no door accepts, tried on every target's bodies: each must be a clean 4xx.
HOSTILE_HEADERS: tuple[Mapping[str, str], ...] = (
    {"content-type": "text/plain"},
    {"content-type": ""},
    {"content-type": ";;;=\x00"},
    {"content-type": JSON, "content-encoding": "br"},
    {"content-type": NDJSON, "content-encoding": "deflate"},
    {"content-type": JSON, "content-encoding": "gzip, gzip"},
)


def target(name: str) -> Target:
    for candidate in TARGETS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no fuzz target {name!r}; the targets are {', '.join(names())}")


def names() -> list[str]:
    return [t.name for t in TARGETS]


def judged() -> tuple[Target, ...]:
    """The targets the server campaign posts to: those whose answers it can predict."""
    return tuple(t for t in TARGETS if t.expect is not None and t.read is not None)


def header_sets(target: Target) -> list[Mapping[str, str]]:
    """Every header set the fuzzers send a body with: the target's kinds, then hostile ones."""
    return [*target.kinds.values(), *HOSTILE_HEADERS]
