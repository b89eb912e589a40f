"""The Elasticsearch door: the mapping (the decoder alone), then per-item answers, request-level
refusals and hostile bodies against a real server process. A refused request stores nothing,
and nothing is ever a 5xx."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from aggregator.decoders import elastic
from aggregator.decoders.elastic import BulkItems, decode_bulk
from aggregator.messages import EventRecord, Limits, Rejection
from tests.elastic import Door, elastic_server

LIMITS = Limits(max_body_bytes=1 << 20, max_batch_events=50, max_payload_bytes=1024)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NDJSON = {"Content-Type": "application/x-ndjson"}


def ndjson(*lines: Any) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def decode(body: bytes, url_index: str | None = "idx") -> tuple[list[EventRecord], BulkItems]:
    out = BulkItems()
    records = decode_bulk(body, {}, LIMITS, url_index=url_index, out=out, now=NOW)
    return records, out


@pytest.mark.parametrize(
    ("document", "timestamp", "source"),
    [
        ({"@timestamp": "2026-11-30T06:15:42.420599+00:00"}, "2026-11-30T06:15:42.420599Z",
         "_bulk"),
        ({"@timestamp": "2026-11-30T08:00:00+02:00"}, "2026-11-30T06:00:00Z", "_bulk"),
        ({"@timestamp": 1796032800000}, "2026-11-30T10:00:00Z", "_bulk"),
        ({"@timestamp": "1796032800123"}, "2026-11-30T10:00:00.123000Z", "_bulk"),
        ({"timestamp": "2026-11-30T10:00:00Z"}, "2026-11-30T10:00:00Z", "_bulk"),
        ({}, "2026-11-30T12:00:00Z", "_bulk"),  # the time of receipt
        ({"host": {"name": "a", "hostname": "b"}}, "2026-11-30T12:00:00Z", "a"),
        ({"host": {"hostname": "b"}, "service": {"name": "s"}}, "2026-11-30T12:00:00Z", "b"),
        ({"host": "h", "service": {"name": "s"}}, "2026-11-30T12:00:00Z", "h"),
        ({"host.name": "dotted"}, "2026-11-30T12:00:00Z", "dotted"),
        ({"service": {"name": "s"}, "agent": {"name": "g"}}, "2026-11-30T12:00:00Z", "s"),
        ({"agent": {"name": "g"}}, "2026-11-30T12:00:00Z", "g"),
    ],
)  # fmt: skip
def test_the_mapping(document: dict[str, Any], timestamp: str, source: str) -> None:
    body = ndjson({"index": {"_id": "1"}}, document)
    [record], _ = decode(body)
    assert record == EventRecord("idx", "1", timestamp, source, json.dumps(document))


def test_without_an_id_the_id_is_the_hash_of_the_canonical_document() -> None:
    same = [b'{"b": 1, "a": [1, {"y": 2, "x": 1}]}', b'{"a":[1,{"x":1,"y":2}],"b":1}']
    other = b'{"a":[1,{"x":1,"y":2}],"b":2}'
    body = b"".join(b'{"create":{"_index":"t","_id":""}}\n' + d + b"\n\n" for d in [*same, other])
    records, out = decode(body)
    ids = [r.event_id for r in records]
    assert ids[0] == ids[1] != ids[2] and len(ids[0]) == 32
    assert out.actions == ["create"] * 3 and out.events == records  # item i is event i
    assert records[0].payload == same[0].decode()  # stored as received


def test_items_that_break_a_rule_are_refused_alone() -> None:
    body = (
        ndjson(
            {"create": {"_index": "ok"}},
            {"a": 1},
            {"update": {"_id": "1"}},
            {"doc": {"a": 2}},
            {"delete": {"_id": "1"}},
            {"index": {"_index": "bad index"}},
            {"a": 1},
            {"index": {"_id": " "}},
            {"a": 1},
            {"index": {}},
            [1, 2],
            {"index": {}},
            {"@timestamp": "yesterday"},
            {"index": {}},
            {"@timestamp": "2026-11-30"},
            {"index": {}},
            {"host": {"name": 42}},
            {"index": {}},
            {"pad": "x" * 2000},
        )
        + b'{"index":{}}\n{"a": tru}\n'
    )
    records, out = decode(body, url_index=None)
    assert len(records) == 1 and out.items[0].event == 0
    refused = [(i.action, i.status, i.error) for i in out.items[1:]]
    assert refused == [
        ("update", 400, "illegal_argument_exception"),
        ("delete", 400, "illegal_argument_exception"),
        ("index", 400, "invalid_index_name_exception"),
        ("index", 400, "action_request_validation_exception"),  # no index anywhere
        ("index", 400, "action_request_validation_exception"),
        ("index", 400, "action_request_validation_exception"),
        ("index", 400, "action_request_validation_exception"),
        ("index", 400, "action_request_validation_exception"),
        ("index", 400, "action_request_validation_exception"),
        ("index", 400, "action_request_validation_exception"),
    ]
    records, out = decode(body)  # with the URL's index: each item's own reason
    reasons = [i.reason for i in out.items[1:]]
    assert "immutable" in reasons[0] and "immutable" in reasons[1]
    assert "whitespace" in reasons[2] and "not blank" in reasons[3]
    assert "JSON object" in reasons[4] and "yesterday" in reasons[5]
    assert "2026-11-30" in reasons[6] and "source" in reasons[7]
    assert "AGGREGATOR_MAX_PAYLOAD_BYTES" in reasons[8] and "not valid JSON" in reasons[9]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"index":{}}\n', 400, "no document line"),  # an odd line count
        (b"\n \n", 400, "empty"),
        (b'{"index":{}}\n{"a":1}\n{"index":{}}\n', 400, "no document line"),
        (b'{"index":{}\n{"a":1}\n', 400, "not a valid action line"),  # invalid JSON
        (b'{"a":1}\n{"a":1}\n', 400, "not a valid action line"),
        (b'{"a":{}}\n{"a":1}\n', 400, "exactly one of"),
        (b'{"index":{},"create":{}}\n{"a":1}\n', 400, "exactly one of"),
        (b'{"index":{"_id":1.5}}\n{"a":1}\n', 400, "not a valid action line"),
        (b'{"index":{}}\n{"a":1}\n' * 51, 413, "AGGREGATOR_MAX_BATCH_EVENTS"),
        (b"[" * 100_000 + b"\n{}\n", 400, "action line"),
    ],
)
def test_a_body_that_is_not_bulk_pairs_is_refused_whole(
    body: bytes, status: int, words: str
) -> None:
    out = BulkItems()
    with pytest.raises(Rejection) as refused:
        decode_bulk(body, {}, LIMITS, url_index="i", out=out, now=NOW)
    assert refused.value.status == status and words in refused.value.message
    assert out.items == []


# Against a real server process.


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    args = ("--max-batch-events", "50", "--max-body-bytes", "200000", "--max-payload-bytes", "8192")
    with elastic_server(tmp_path_factory.mktemp("elastic"), *args) as door:
        yield door
        door.assert_healthy()


def bulk(door: Door, body: bytes, path: str = "/_bulk", **headers: str) -> Any:
    return door.http.post(path, content=body, headers={**NDJSON, **headers})


def test_per_item_answers_come_from_the_writer(door: Door) -> None:
    body = ndjson(
        {"create": {"_id": "a"}},
        {"n": 1},
        {"create": {"_id": "a"}},  # the same key later in the same request
        {"n": 2},
        {"index": {"_id": "b"}},
        {"n": 3},
        {"index": {"_id": "b"}},
        {"n": 4},
        {"index": {"_index": "other", "_id": "a"}},  # another topic: another event
        {"n": 5},
        {"delete": {"_id": "a"}},
    )
    first = bulk(door, body, "/items/_bulk")
    assert first.status_code == 200 and first.headers["x-elastic-product"] == "Elasticsearch"
    answer = first.json()
    assert answer["errors"] is True
    got = [(k, v["_index"], v["_id"], v["status"]) for i in answer["items"] for k, v in i.items()]
    assert got == [
        ("create", "items", "a", 201),
        ("create", "items", "a", 409),
        ("index", "items", "b", 201),
        ("index", "items", "b", 200),
        ("index", "other", "a", 201),
        ("delete", "items", "a", 400),
    ]
    assert answer["items"][3]["index"]["result"] == "noop"
    assert answer["items"][1]["create"]["error"]["type"] == "version_conflict_engine_exception"
    again = bulk(door, body, "/items/_bulk").json()
    assert [v["status"] for i in again["items"] for v in i.values()] == [
        409,
        409,
        200,
        200,
        200,
        400,
    ]
    assert [e["payload"] for e in door.events("items")] == [{"n": 1}, {"n": 3}]
    clean = bulk(door, ndjson({"index": {"_id": "c"}}, {"n": 6}), "/items/_bulk").json()
    assert clean["errors"] is False and clean["items"][0]["index"]["result"] == "created"


def test_gzip_and_put_and_the_compatible_media_type(door: Door) -> None:
    body = gzip.compress(ndjson({"create": {"_id": "z"}}, {"n": 1}))
    media = "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
    response = door.http.put(
        "/gz/_bulk",
        content=body,
        headers={
            "Content-Type": media,
            "Content-Encoding": "gzip",
            "Accept": "application/vnd.elasticsearch+json; compatible-with=8",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == (
        "application/vnd.elasticsearch+json; compatible-with=8"
    )
    assert response.json()["items"][0]["create"]["status"] == 201


def test_the_handshake(door: Door) -> None:
    got = door.http.get(
        "/", headers={"Accept": "application/vnd.elasticsearch+json; compatible-with=9"}
    )
    assert got.status_code == 200 and got.headers["x-elastic-product"] == "Elasticsearch"
    assert got.json()["version"]["number"].startswith("9.")
    assert door.http.get("/").json()["version"]["number"].startswith("8.")
    head = door.http.head("/")
    assert head.status_code == 200 and head.content == b""
    health = door.http.head("/_cat/health")
    assert health.status_code == 200
    assert door.http.get("/_bulk").status_code == 405


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind"),
    [
        (b'{"index":{}}\n{"a":1}\n{"index":{}}\n', {}, 400, "illegal_argument_exception"),
        (b'{"index":{}}\n{"a":1}\n' * 51, {}, 413, "content_too_long_exception"),
        (b"{}", {"Content-Type": "text/csv"}, 415, "media_type_header_exception"),
        (b"not gzip", {"Content-Encoding": "gzip"}, 400, "parse_exception"),
        # A gzip bomb: 300 kB of blank lines compressed to a few hundred bytes.
        (gzip.compress(b"\n" * 300_000), {"Content-Encoding": "gzip"}, 413,
         "content_too_long_exception"),
    ],
)  # fmt: skip
def test_hostile_bodies_are_refused_whole_and_store_nothing(
    door: Door, body: bytes, headers: dict[str, str], status: int, kind: str
) -> None:
    before = door.counters()
    response = bulk(door, body, "/hostile/_bulk", **headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == kind and response.json()["status"] == status
    assert door.counters() == before and door.events("hostile") == []


def test_a_huge_line_is_refused(door: Door) -> None:
    huge = b'{"index":{}}\n{"a":"' + b"x" * 300_000 + b'"}\n'
    before = door.counters()
    response = bulk(door, huge, "/hostile/_bulk")
    assert response.status_code == 413
    assert door.counters() == before
    # Over the payload limit but within the body: that item alone, with the limit named.
    big = ndjson({"index": {}}, {"a": "x" * 9000}, {"index": {"_id": "fine"}}, {"a": 1})
    answer = bulk(door, big, "/huge/_bulk").json()
    assert [v["status"] for i in answer["items"] for v in i.values()] == [400, 201]
    assert "AGGREGATOR_MAX_PAYLOAD_BYTES" in answer["items"][0]["index"]["error"]["reason"]
    assert [e["event_id"] for e in door.events("huge")] == ["fine"]


def test_the_metrics_name_the_protocol(door: Door) -> None:
    bulk(door, ndjson({"index": {"_id": "m"}}, {"n": 1}, {"delete": {"_id": "m"}}), "/m/_bulk")
    bulk(door, b'{"index":{}}\n', "/m/_bulk")
    assert door.metric('aggregator_publish_events_total{protocol="elasticsearch",result="stored"}')
    assert door.metric('aggregator_publish_events_total{protocol="elasticsearch",result="refused"}')
    rejected = 'aggregator_publish_rejected_total{protocol="elasticsearch",'
    assert door.metric(rejected + 'reason="illegal_argument_exception"}') >= 1


# Properties: arbitrary bodies, and the usual request's fast path against the general one.

_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_documents = st.dictionaries(
    st.sampled_from(["@timestamp", "timestamp", "host", "service", "agent", "host.name", "msg"]),
    st.one_of(
        _text,
        st.integers(-(10**15), 10**15),
        st.sampled_from(["2026-11-30T10:00:00Z", "2026-11-30T10:00:00+02:00", "1796032800000"]),
        st.fixed_dictionaries({}, optional={"name": _text, "hostname": _text}),
        st.none(),
    ),
    max_size=5,
)
_actions = st.fixed_dictionaries(
    {},
    optional={
        "_index": st.sampled_from(["a", "a", "a", "b c", ""]),
        "_id": st.sampled_from(["1", "2", "", "", " ", 1, 0]),
    },
)
_pairs = st.lists(
    st.tuples(st.sampled_from(["create", "index"]), _actions, _documents), min_size=1, max_size=4
)


@settings(max_examples=300, deadline=None)
@given(_pairs)
def test_the_fast_path_answers_as_the_general_path(pairs: list[Any]) -> None:
    body = b"".join(
        json.dumps({name: meta}).encode() + b"\n" + json.dumps(doc).encode() + b"\n"
        for name, meta, doc in pairs
    )
    fast_records, fast = decode(body)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(elastic, "_usual", lambda *args: None)
        records, general = decode(body)
    assert fast_records == records
    event("fast path" if fast.actions else "general path")
    if fast.actions:  # the fast path took it: every item became its event, in order
        assert [(i.action, i.index, i.id, i.event) for i in general.items] == [
            (name, r.topic, r.event_id, n)
            for n, (name, r) in enumerate(zip(fast.actions, records, strict=True))
        ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.lists(_text, max_size=6).map(lambda s: "\n".join(s).encode()))
def test_any_body_is_events_or_a_rejection(body: bytes) -> None:
    out = elastic.BulkItems()
    try:
        records = decode_bulk(body, {}, LIMITS, url_index="i", out=out, now=NOW)
    except Rejection as rejection:
        assert rejection.status in (400, 413) and out.items == [] and out.actions == []
        return
    for record in records:
        assert isinstance(json.loads(record.payload), dict)
    assert len(records) == len(out.actions) or len(records) == sum(
        item.event is not None for item in out.items
    )


def test_retry_later_is_429_or_503_and_a_cut_connection_without_a_user_agent(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    plan = ["429", "503", "429", "503"]
    body = ndjson({"create": {"_id": "later"}}, {"n": 1})
    with elastic_server(tmp_path_factory.mktemp("later"), faults=plan) as door:
        answers = [bulk(door, body, "/later/_bulk") for _ in range(2)]
        door.http.headers.pop("user-agent")  # as rsyslog's omelasticsearch sends
        for _ in range(2):
            with pytest.raises(httpx.RemoteProtocolError):  # the answer is cut short
                bulk(door, body, "/later/_bulk")
        assert door.events("later") == []  # nothing of the refused requests was stored
        stored = bulk(door, body, "/later/_bulk")  # the plan is spent: stored now
        door.assert_healthy()
    assert [(a.status_code, a.headers["retry-after"]) for a in answers] == [(429, "1"), (503, "1")]
    assert [a.json()["error"]["type"] for a in answers] == [
        "es_rejected_execution_exception",
        "unavailable_shards_exception",
    ]
    assert stored.json()["items"][0]["create"]["status"] == 201
