"""Attacks on the Elasticsearch door (issue 13), each against a real server process: what a
specialist tried that the door got wrong, kept as regression tests. A bad item is a per-item
400 naming the rule, never a 5xx; a refused request stores nothing."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from elasticsearch import AuthenticationException, Elasticsearch, helpers

from aggregator.decoders.elastic_document import content_id
from tests.elastic import Door, elastic_server
from tests.test_stopping import faulty_server, publish_in_background, wait_for_stall

NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with elastic_server(tmp_path_factory.mktemp("attacks")) as door:
        yield door
        door.assert_healthy()


def bulk(door: Door, body: bytes, path: str = "/_bulk", **headers: str) -> httpx.Response:
    return door.http.post(path, content=body, headers={**NDJSON, **headers})


def statuses(answer: Any) -> list[tuple[str, int]]:
    return [(name, item["status"]) for entry in answer["items"] for name, item in entry.items()]


def test_a_number_no_double_holds_is_refused_alone_not_a_500(door: Door) -> None:
    """``1e400`` without an ``_id``: the content hash could not decode it, and the request got
    a 500 (to rsyslog, a cut answer: it resent the poison batch for ever)."""
    body = (
        b'{"create":{}}\n{"n":1e400}\n'
        b'{"create":{"_id":"kept"}}\n{"n":1e400}\n'  # with an _id: stored as received
        b'{"create":{}}\n{"n":1}\n'
    )
    response = bulk(door, body, "/huge-number/_bulk")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert statuses(answer) == [("create", 400), ("create", 201), ("create", 201)]
    reason = answer["items"][0]["create"]["error"]["reason"]
    assert "64-bit float" in reason and "_id" in reason
    assert [e["payload"] for e in door.events("huge-number")] == [{"n": 1e400}, {"n": 1}]


def test_cat_health_says_red_when_health_does(tmp_path: Path) -> None:
    """``/_cat/health`` (rsyslog's check before it resends) looked at the last transaction's
    error alone: with the store's call hung it said green while ``/health`` said 503, and rsyslog
    resumed into a store that could not commit."""
    args = ("--stall-seconds", "0.2", "--shutdown-grace-seconds", "0.5")
    with (
        faulty_server(tmp_path, *args) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        assert http.get("/_cat/health").status_code == 200
        publish_in_background(server.url, "hang")
        reason = json.loads(wait_for_stall(server.url))["reason"]
        health = http.get("/_cat/health")
        head = http.head("/_cat/health")
    assert health.status_code == 503 and head.status_code == 503
    assert " red " in health.text and reason in health.text
    assert health.headers["retry-after"] == "1"


def test_an_integer_id_is_its_text_as_elasticsearch_reads_it(door: Door) -> None:
    """The Python client's helpers send ``{"_id": 5}`` as a number; the whole batch was a 400
    ("not a valid action line"), where Elasticsearch takes it as the id "5"."""
    body = (
        b'{"index":{"_id":5}}\n{"n":1}\n{"create":{"_id":"5"}}\n{"n":2}\n{"index":{"_id":0}}\n{}\n'
    )
    answer = bulk(door, body, "/int-id/_bulk").json()
    assert statuses(answer) == [("index", 201), ("create", 409), ("index", 201)]
    assert [item["index"]["_id"] for item in answer["items"][::2]] == ["5", "0"]
    assert [e["event_id"] for e in door.events("int-id")] == ["5", "0"]


def test_a_compatible_with_version_not_served_is_refused_by_name(door: Door) -> None:
    """``compatible-with=10`` was read as "1": the answer claimed ``compatible-with=1``."""
    body = b'{"index":{"_id":"v10"}}\n{"n":1}\n'
    ten = "application/vnd.elasticsearch+x-ndjson; compatible-with=10"
    refused = bulk(door, body, "/compat/_bulk", **{"Content-Type": ten})
    assert refused.status_code == 400 and refused.headers["content-type"] == "application/json"
    assert refused.json()["error"]["type"] == "media_type_header_exception"
    assert "compatible-with=10" in refused.json()["error"]["reason"]
    assert door.events("compat") == []  # nothing stored
    accept = {"Accept": "application/vnd.elasticsearch+json; compatible-with=10"}
    assert door.http.get("/", headers=accept).status_code == 400
    nine = "application/vnd.elasticsearch+json; compatible-with=9"
    served = door.http.get("/", headers={"Accept": nine})
    assert served.headers["content-type"] == nine
    seven = bulk(door, body, "/compat/_bulk", **{"Content-Type": ten.replace("10", "7")})
    assert statuses(seven.json()) == [("index", 201)]


def test_epoch_milliseconds_as_text_are_ascii_digits(door: Door) -> None:
    """``"١٢٣"`` (Arabic-Indic digits) passed ``str.isdigit()`` and was stored as 123 ms after
    1970; a negative count as text was refused while the same number was taken."""
    stamps = [b'"\\u0661\\u0662\\u0663"', b'"-1000"', b"-1000", b'"1796032800123"', b'"\\u00b2"']
    body = b"".join(b'{"index":{}}\n{"@timestamp":%s}\n' % stamp for stamp in stamps)
    answer = bulk(door, body, "/epoch-text/_bulk").json()
    assert statuses(answer) == [("index", 400), ("index", 201), ("index", 201), ("index", 201),
                                ("index", 400)]  # fmt: skip
    assert "epoch milliseconds" in answer["items"][0]["index"]["error"]["reason"]
    assert [e["timestamp"] for e in door.events("epoch-text")] == [
        "1969-12-31T23:59:59Z",
        "1969-12-31T23:59:59Z",
        "2026-11-30T10:00:00.123000Z",
    ]


def test_the_clients_id_and_key_form_of_api_key(tmp_path: Path) -> None:
    """``Elasticsearch(api_key=(id, key))`` sends ``ApiKey base64(id:key)``; with the publish
    token as the key it got a 401, though the docs promise the clients' ``api_key``."""
    token = "s3cret"
    with elastic_server(tmp_path, token=token) as door:
        client = Elasticsearch(door.url, api_key=("shipper", token))
        actions = [{"_index": "api-key", "_id": "1", "_source": {"n": 1}}]
        assert helpers.bulk(client, actions) == (1, [])
        wrong = Elasticsearch(door.url, api_key=("shipper", "not-it"))
        with pytest.raises(AuthenticationException):
            helpers.bulk(wrong, [{"_index": "api-key", "_id": "2", "_source": {"n": 2}}])
        for header in ("ApiKey c2hpcHBlcjo=", "ApiKey " + "x" * 8, "Basic " + "czNjcmV0"):
            # base64("shipper:") with no key; another token; base64("s3cret"): no password
            answer = door.http.post("/_bulk", content=b"{}", headers={"Authorization": header})
            assert answer.status_code == 401, header
        assert [e["event_id"] for e in door.events("api-key")] == ["1"]


@pytest.mark.parametrize(
    ("first", "second", "one"),
    [
        (b'{"a":1,"b":2}', b'{ "b": 2, "a": 1 }\r', True),
        (b'{"m":"\\u00e9"}', '{"m":"\u00e9"}'.encode(), True),
        (b'{"n":1e2}', b'{"n":100.0}', True),
        (b'{"n":1}', b'{"n":1.0}', False),
        (b'{"n":0.0}', b'{"n":-0.0}', False),
        ('{"m":"\u00e9"}'.encode(), '{"m":"e\u0301"}'.encode(), False),
        (b'{"n":1,"n":2}', b'{"n":2}', True),  # the last of a key given twice counts
    ],
)
def test_the_content_id_table_of_the_docs(first: bytes, second: bytes, one: bool) -> None:
    """docs/elasticsearch.md, "The content id": which documents are one event."""
    assert (content_id(first.strip()) == content_id(second.strip())) is one


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"index":{}}\n{"a":1}\n\n{"index":{}}\n{"a":2}\n\n{"index":{}\n{"a":3}\n',
         "line 7 is not a valid action line"),
        (b'{"index":{}}\n{"a":1}\n\n{"index":{}}\n', "line 4 (index) has no document line"),
        (b'\n\n{"nope":{}}\n{"a":1}\n', "line 3: an action line names exactly one of"),
    ],
)  # fmt: skip
def test_a_refusal_names_the_line_of_the_body(door: Door, body: bytes, words: str) -> None:
    """Lines were counted from 0 among the non-blank ones: in rsyslog's bodies (a blank line
    after each document) "line 4" was the body's seventh line."""
    before = door.counters()
    response = bulk(door, body, "/lines/_bulk")
    assert response.status_code == 400
    assert words in response.json()["error"]["reason"], response.text
    assert door.counters() == before and door.events("lines") == []


def test_one_key_raced_by_concurrent_requests_is_created_once(door: Door) -> None:
    """Forty requests at once, each with the same ``create`` key, the same ``index`` key and the
    same id-less document (so they share group commits): one ``created`` for each, whatever
    wins; the rest 409 / noop. Held when tried; kept as a guard of per-item truth."""

    def send(n: int) -> Any:
        body = (
            b'{"create":{"_id":"c"}}\n{"n":%d}\n{"index":{"_id":"i"}}\n{"n":%d}\n'
            b'{"create":{}}\n{"same":true}\n' % (n, n)
        )
        with httpx.Client(base_url=door.url, timeout=60) as http:
            return http.post("/race/_bulk", content=body, headers=NDJSON).json()

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(send, range(40)))
    seen = Counter(pair for answer in answers for pair in statuses(answer))
    assert seen == {
        ("create", 201): 2, ("create", 409): 78, ("index", 201): 1, ("index", 200): 39
    }  # fmt: skip
    assert len(door.events("race")) == 3


def test_a_flood_of_blank_lines_is_refused_before_it_is_split(door: Door) -> None:
    """4 MiB of newlines (within the body limit) held the event loop for about 0.4 s each to
    split and skip, then said "empty": now a 413 naming the line limit, counted in C."""
    limit = 4 * 1000  # the door's AGGREGATOR_MAX_BATCH_EVENTS is the default, 1000
    before = door.counters()
    flood = bulk(door, b"\n" * (4 * 1024 * 1024 - 1), "/flood/_bulk")
    assert flood.status_code == 413
    assert flood.json()["error"]["type"] == "content_too_long_exception"
    reason = flood.json()["error"]["reason"]
    assert f"at most {limit}" in reason and "AGGREGATOR_MAX_BATCH_EVENTS" in reason
    rsyslog = b'{"index":{}}\n{"n":%d}\n\n'  # three lines an item, as rsyslog sends them
    full = bulk(door, b"".join(rsyslog % n for n in range(1000)), "/flood/_bulk")
    assert full.status_code == 200 and full.json()["errors"] is False
    assert door.counters()[1] == before[1] + 1000


def test_a_document_nested_too_deeply_is_refused_alone(door: Door) -> None:
    """1,000 nested arrays in one document (2 kB) refused the whole request, the valid items
    beside it too: "not atomic per request" holds for this item as for any other."""
    deep = b'{"a":' + b"[" * 1000 + b"]" * 1000 + b"}"
    body = b'{"index":{"_id":"ok"}}\n{"a":1}\n{"index":{}}\n%s\n{"index":{"_id":"d"}}\n%s\n' % (
        deep,
        deep,
    )
    answer = bulk(door, body, "/deep/_bulk").json()
    assert statuses(answer) == [("index", 201), ("index", 400), ("index", 400)]
    assert "nested too deeply" in answer["items"][1]["index"]["error"]["reason"]
    assert [e["event_id"] for e in door.events("deep")] == ["ok"]


def test_gzip_with_trailing_bytes_says_where_the_gzip_ended(door: Door) -> None:
    """Trailing bytes after a whole gzip member were "incorrect header check", which names
    neither the trailing bytes nor where they begin. Nothing is stored."""
    member = gzip.compress(b'{"index":{"_id":"g"}}\n{"n":1}\n')
    for tail in (b"garbage", b"\0" * 8):
        response = bulk(door, member + tail, "/gz-tail/_bulk", **{"Content-Encoding": "gzip"})
        assert response.status_code == 400
        reason = response.json()["error"]["reason"]
        assert f"{len(member)} bytes of gzip, then {len(tail)} bytes" in reason, reason
    assert door.events("gz-tail") == []


def test_a_byte_order_mark_before_the_first_action_is_skipped(door: Door) -> None:
    """A UTF-8 BOM (PowerShell's ``-Encoding utf8`` writes one) made the whole request a 400:
    "line 0 is not a valid action line (invalid character (byte 0))"."""
    body = b'\xef\xbb\xbf{"index":{"_id":"bom"}}\n{"n":1}\n'
    answer = bulk(door, body, "/bom/_bulk").json()
    assert statuses(answer) == [("index", 201)]
    assert [e["payload"] for e in door.events("bom")] == [{"n": 1}]
