"""The Loki push door with real clients against a real server process: PyPI's
``python-logging-loki`` handler (JSON) with each push sent twice, and protobuf + snappy pushes
built with Loki's push.proto (compiled, ``aggregator/decoders/proto``) and cramjam, as Promtail
and Alloy send them; then Loki's response shapes and hostile bodies."""

from __future__ import annotations

import gzip
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cramjam
import logging_loki
import pytest
import requests

from aggregator.decoders.proto.loki_push_pb2 import (
    EntryAdapter,
    LabelPairAdapter,
    PushRequest,
    StreamAdapter,
)
from tests.shippers import Door, shipper_server
from tests.support import ROOT

PROTOBUF = {"Content-Type": "application/x-protobuf"}
NS = 1_796_000_000_123_456_789


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with shipper_server(tmp_path_factory.mktemp("loki")) as door:
        yield door
        door.assert_healthy()


class TwiceSession(requests.Session):
    """Posts every push twice, as a shipper's retry after a lost answer does."""

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        super().post(*args, **kwargs).raise_for_status()
        return super().post(*args, **kwargs)


def test_python_logging_loki_pushes_are_stored_once_when_sent_twice(door: Door) -> None:
    handler = logging_loki.LokiHandler(
        url=f"{door.url}/loki/api/v1/push",
        tags={"job": "loki-handler", "host": "host-b", "env": "test"},
        version="1",
    )
    handler.emitter.session_class = TwiceSession
    logger = logging.getLogger("tests.loki.handler")
    logger.propagate = False
    logger.addHandler(handler)
    before = door.counters()
    try:
        for i in range(3):
            logger.warning("line %d", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert door.delta(before) == [6, 3, 3]
    events = door.events("loki-handler")
    assert [e["payload"]["line"] for e in events] == ["line 0", "line 1", "line 2"]
    first = events[0]
    assert first["source"] == "host-b"
    assert first["payload"]["labels"] == {
        "job": "loki-handler",
        "host": "host-b",
        "env": "test",
        "severity": "warning",
        "logger": "tests.loki.handler",
    }
    assert len(first["event_id"]) == 32
    assert first["timestamp"][:4] == first["received_at"][:4]
    assert door.metric("aggregator_publish_events_total", protocol="loki", result="duplicate") >= 3


def _push(*streams: StreamAdapter) -> bytes:
    return bytes(
        cramjam.snappy.compress_raw(PushRequest(streams=list(streams)).SerializeToString())
    )


def _entry(line: str, ns: int = NS, **metadata: str) -> EntryAdapter:
    entry = EntryAdapter(line=line)
    entry.timestamp.FromNanoseconds(ns)
    entry.structuredMetadata.extend(LabelPairAdapter(name=k, value=v) for k, v in metadata.items())
    return entry


def test_protobuf_snappy_push_is_stored_once_when_sent_twice(door: Door) -> None:
    body = _push(
        StreamAdapter(
            labels='{service_name="proto-push", job="ignored", instance="node-1", '
            'quote="a \\"b\\" \\\\ c"}',
            entries=[_entry("one", trace_id="abc"), _entry("two", NS + 1), _entry("one", NS + 2)],
        ),
        StreamAdapter(labels='{app="proto-push-app"}', entries=[_entry("three")]),
    )
    before = door.counters()
    for _ in range(2):
        response = door.http.post("/loki/api/v1/push", content=body, headers=PROTOBUF)
        assert (response.status_code, response.content) == (204, b"")
    assert door.delta(before) == [8, 4, 4]
    one, two, one_later = door.events("proto-push")
    assert (one["payload"]["line"], two["payload"]["line"]) == ("one", "two")
    assert one_later["event_id"] != one["event_id"]  # same line, another ns: another entry
    assert one["timestamp"] == "2026-11-30T00:53:20.123456Z"
    assert one["payload"]["time_ns"] == str(NS)
    assert one["payload"]["structured_metadata"] == {"trace_id": "abc"}
    assert one["payload"]["labels"]["quote"] == 'a "b" \\ c'
    assert one["source"] == "node-1"
    [three] = door.events("proto-push-app")
    assert three["source"] == "loki"


def test_the_same_entry_as_json_and_as_protobuf_is_one_event(door: Door) -> None:
    labels = {"job": "both-encodings", "host": "h"}
    proto = _push(StreamAdapter(labels='{job="both-encodings", host="h"}', entries=[_entry("x")]))
    before = door.counters()
    assert door.http.post("/loki/api/v1/push", content=proto, headers=PROTOBUF).status_code == 204
    as_json = {"streams": [{"stream": labels, "values": [[str(NS), "x"]]}]}
    assert door.http.post("/loki/api/v1/push", json=as_json).status_code == 204
    gzipped = gzip.compress(
        b'{"streams":[{"stream":{"job":"both-encodings","host":"h"},"values":[["%d","x",'
        b'{"k":"v"}]]}]}' % NS
    )  # structured metadata is not part of an entry's identity, as in Loki
    response = door.http.post(
        "/loki/api/v1/push",
        content=gzipped,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 204
    assert door.delta(before) == [3, 1, 2]


def test_topic_override_and_default(door: Door) -> None:
    body = _push(StreamAdapter(labels='{env="x"}', entries=[_entry("no topic label")]))
    assert door.http.post("/loki/api/v1/push", content=body, headers=PROTOBUF).status_code == 204
    assert [e["payload"]["line"] for e in door.events("loki")] == ["no topic label"]
    overridden = door.http.post(
        "/loki/api/v1/push?topic=loki-override", content=body, headers=PROTOBUF
    )
    assert overridden.status_code == 204
    assert len(door.events("loki-override")) == 1


def _assert_refused(
    door: Door, body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    before = door.counters()
    response = door.http.post("/loki/api/v1/push", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert words in response.text
    assert response.text.endswith("\n")
    assert door.delta(before) == [0, 0, 0]


def test_hostile_pushes_are_refused_whole_with_loki_shaped_errors(door: Door) -> None:
    good = [_entry(f"ok {i}", NS + i) for i in range(5)]
    valid = PushRequest(streams=[StreamAdapter(labels='{job="hostile"}', entries=good)])
    raw = valid.SerializeToString()
    _assert_refused(door, raw, PROTOBUF, 400, "not valid snappy")  # not compressed at all
    truncated = bytes(cramjam.snappy.compress_raw(raw[:-5]))
    _assert_refused(door, truncated, PROTOBUF, 400, "not a protobuf PushRequest")
    framed = bytes(cramjam.snappy.compress(raw))  # the framing format, not Loki's block format
    _assert_refused(door, framed, PROTOBUF, 400, "snappy")
    bomb = bytes(cramjam.snappy.compress_raw(b"\0" * (5 * 1024 * 1024)))
    assert len(bomb) < 300_000
    _assert_refused(door, bomb, PROTOBUF, 413, "AGGREGATOR_MAX_BODY_BYTES")
    liar = b"\xff\xff\xff\xff\x0f" + b"\0" * 10  # the header claims 4 GiB
    _assert_refused(door, liar, PROTOBUF, 413, "decompresses to")
    giant = _push(StreamAdapter(labels='{job="hostile", big="%s"}' % ("x" * 70_000), entries=good))
    _assert_refused(door, giant, PROTOBUF, 400, "AGGREGATOR_MAX_PAYLOAD_BYTES")
    bad_among_good = _push(
        StreamAdapter(labels='{job="hostile"}', entries=good),
        StreamAdapter(labels="{}", entries=good),
    )
    _assert_refused(door, bad_among_good, PROTOBUF, 400, "at least one label pair")
    unparsable = _push(StreamAdapter(labels="{job=hostile}", entries=good))
    _assert_refused(door, unparsable, PROTOBUF, 400, "not a label set")
    spaced = _push(StreamAdapter(labels='{job="has space"}', entries=good))
    _assert_refused(door, spaced, PROTOBUF, 400, "whitespace")
    json_headers = {"Content-Type": "application/json"}
    _assert_refused(door, b'{"streams": [', json_headers, 400, "not valid JSON")
    _assert_refused(
        door,
        b'{"streams": [{"stream": {"job": "hostile"}, "values": [["soon", "x"]]}]}',
        json_headers,
        400,
        "does not have that shape",
    )
    _assert_refused(door, b'{"streams": 1}', json_headers, 400, "Loki's shape")
    _assert_refused(door, _push(), {"Content-Type": "text/plain"}, 415, "application/x-protobuf")
    over = door.http.post(
        "/loki/api/v1/push", content=b"\0" * (4 * 1024 * 1024 + 1), headers=PROTOBUF
    )
    assert over.status_code == 413  # refused as it arrives, before the route reads it
    assert door.events("hostile") == []
    assert door.http.post("/loki/api/v1/push", content=_push(), headers=PROTOBUF).status_code == 204
    door.assert_healthy()


def test_the_compiled_push_proto_is_what_its_source_generates(tmp_path: Path) -> None:
    proto = ROOT / "aggregator" / "decoders" / "proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--python_out={tmp_path}",
         str(proto / "loki_push.proto")],
        check=True,
    )  # fmt: skip
    generated = (tmp_path / "loki_push_pb2.py").read_text()
    checked_in = (proto / "loki_push_pb2.py").read_text()
    serialized = [line for line in generated.splitlines() if "AddSerializedFile" in line]
    assert serialized and serialized[0] in checked_in.splitlines()
