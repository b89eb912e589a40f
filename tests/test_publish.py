"""POST /publish against the contract: shapes, encodings, every validation rule, nothing stored."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import Server, open_server
from tests.support import event

pytestmark = pytest.mark.trio
JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
async def small(tmp_path: Path, backend: dict[str, Any]) -> AsyncIterator[Server]:
    """A server with small limits, so that each limit is cheap to cross."""
    async with open_server(
        tmp_path / "data", max_body_bytes=4096, max_batch_events=5, max_payload_bytes=256, **backend
    ) as server:
        yield server


async def assert_nothing_stored(server: Server, before: dict[str, Any]) -> None:
    after = await server.stats()
    assert {
        k: after[k] for k in ("received", "unique_processed", "duplicate_dropped", "topics")
    } == {k: before[k] for k in ("received", "unique_processed", "duplicate_dropped", "topics")}
    assert await server.all_events() == []


async def test_single_array_and_wrapper_shapes_are_accepted(server: Server) -> None:
    with trio.fail_after(10):
        one = await server.publish(event(event_id="1"))
        many = await server.publish([event(event_id="2"), event(event_id="3")])
        wrapped = await server.publish({"events": [event(event_id="4")]})
    assert [r.status_code for r in (one, many, wrapped)] == [200, 200, 200]
    assert many.json() == {"accepted": 2, "stored": 2, "duplicates": 0}
    assert [e["event_id"] for e in await server.all_events()] == ["1", "2", "3", "4"]


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "application/vnd.logs+json"],
)
async def test_json_content_types(server: Server, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with trio.fail_after(10):
        response = await server.client.post(
            "/publish", content=json.dumps(event()).encode(), headers=headers
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "stored": 1, "duplicates": 0}


async def test_ndjson_skips_blank_lines_and_gzip_is_accepted(server: Server) -> None:
    lines = [json.dumps(event(event_id="a")), "", "  ", json.dumps(event(event_id="b"))]
    body = gzip.compress("\n".join(lines).encode() + b"\n")
    with trio.fail_after(10):
        response = await server.client.post(
            "/publish", content=body, headers={**NDJSON, "Content-Encoding": "gzip"}
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2, "stored": 2, "duplicates": 0}


async def test_stored_event_is_normalised_with_seq_and_received_at(server: Server) -> None:
    with trio.fail_after(10):
        await server.publish(
            [
                event(event_id="1", timestamp="2026-11-21T10:00:00+02:00", payload={"k": [1, 2]}),
                {
                    k: v
                    for k, v in event(event_id="2", timestamp="2026-11-21 10:00:00.25").items()
                    if k != "payload"
                },
            ]
        )
        first, second = await server.all_events()
    assert first["timestamp"] == "2026-11-21T08:00:00Z"
    assert first["payload"] == {"k": [1, 2]}
    assert second["timestamp"] == "2026-11-21T10:00:00.250000Z"
    assert second["payload"] == {}
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["received_at"].endswith("Z") and "T" in first["received_at"]


async def test_unusual_but_valid_text_is_stored_as_sent(server: Server) -> None:
    # Format characters (soft hyphen, zero-width joiner) are neither whitespace nor control
    # characters: the quick check fails them, the exact one lets them through.
    topics = ["soft\u00adhyphen", "zw\u200djoiner", "naïve"]
    with trio.fail_after(10):
        response = await server.publish(
            [
                event(topic=t, event_id=" padded id ", source="a source", timestamp=stamp)
                for t, stamp in zip(
                    topics,
                    [
                        "2026-11-21T10:00:00+00:00",
                        "2026-11-21T10:00:00.000001Z",
                        "2026-11-21T10:00:00-00:30",
                    ],
                    strict=True,
                )
            ]
        )
        stored = await server.all_events()
    assert response.json() == {"accepted": 3, "stored": 3, "duplicates": 0}
    assert [(e["topic"], e["event_id"], e["source"], e["timestamp"]) for e in stored] == [
        ("soft\u00adhyphen", " padded id ", "a source", "2026-11-21T10:00:00Z"),
        ("zw\u200djoiner", " padded id ", "a source", "2026-11-21T10:00:00.000001Z"),
        ("naïve", " padded id ", "a source", "2026-11-21T10:30:00Z"),
    ]


async def test_first_copy_in_request_order_wins(server: Server) -> None:
    with trio.fail_after(10):
        response = await server.publish(
            [
                event(event_id="x", payload={"v": 1}),
                event(event_id="x", payload={"v": 2}),
                event(topic="other", event_id="x", payload={"v": 3}),
            ]
        )
        later = await server.publish(event(event_id="x", payload={"v": 4}))
        stored = await server.all_events()
    assert response.json() == {"accepted": 3, "stored": 2, "duplicates": 1}
    assert later.json() == {"accepted": 1, "stored": 0, "duplicates": 1}
    assert [(e["topic"], e["payload"]) for e in stored] == [("t", {"v": 1}), ("other", {"v": 3})]


LONG = "x" * 256
INVALID_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    ("missing topic", {"topic": None}, "topic"),
    ("empty topic", {"topic": ""}, "topic"),
    ("topic over 255", {"topic": LONG}, "topic"),
    ("topic with space", {"topic": "auth login"}, "topic"),
    ("topic with tab", {"topic": "auth\tlogin"}, "topic"),
    ("topic with control", {"topic": "auth\x01"}, "topic"),
    ("topic with unicode space", {"topic": "auth\u2028"}, "topic"),
    ("topic ending in newline", {"topic": "auth\n"}, "topic"),
    ("topic not a string", {"topic": 5}, "topic"),
    ("missing event_id", {"event_id": None}, "event_id"),
    ("empty event_id", {"event_id": ""}, "event_id"),
    ("blank event_id", {"event_id": "   "}, "event_id"),
    ("event_id of unicode spaces", {"event_id": "\u3000\u00a0"}, "event_id"),
    ("event_id over 255", {"event_id": LONG}, "event_id"),
    ("event_id a number", {"event_id": 7}, "event_id"),
    ("missing timestamp", {"timestamp": None}, "timestamp"),
    ("date alone", {"timestamp": "2026-11-21"}, "timestamp"),
    ("epoch number", {"timestamp": 1700000000}, "timestamp"),
    ("no seconds", {"timestamp": "2026-11-21T10:00Z"}, "timestamp"),
    ("words", {"timestamp": "yesterday"}, "timestamp"),
    ("impossible date", {"timestamp": "2026-02-30T10:00:00Z"}, "timestamp"),
    ("missing source", {"source": None}, "source"),
    ("blank source", {"source": "\t "}, "source"),
    ("source over 255", {"source": LONG}, "source"),
    ("payload null", {"payload": "null"}, "payload"),
    ("payload list", {"payload": [1]}, "payload"),
    ("payload string", {"payload": "{}"}, "payload"),
    ("payload number", {"payload": 3}, "payload"),
    ("payload over limit", {"payload": {"x": "y" * 300}}, "payload"),
    ("unknown field", {"level": "info"}, "level"),
    ("server seq", {"seq": 1}, "seq"),
    ("server received_at", {"received_at": "2026-11-21T10:00:00Z"}, "received_at"),
]


def make_invalid(change: dict[str, Any]) -> dict[str, Any]:
    body = event(event_id="bad")
    for key, value in change.items():
        if value is None:
            del body[key]
        elif value == "null":
            body[key] = None
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("case", "change", "field"), INVALID_EVENTS, ids=[c[0] for c in INVALID_EVENTS]
)
async def test_each_event_rule_is_422_naming_the_field_and_stores_nothing(
    small: Server, case: str, change: dict[str, Any], field: str
) -> None:
    before = await small.stats()
    with trio.fail_after(10):
        response = await small.publish([event(event_id="good"), make_invalid(change)])
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation"
    assert {"index": 1, "field": field} in [
        {"index": d["index"], "field": d["field"]} for d in body["details"]
    ]
    assert all(d["message"] for d in body["details"])
    await assert_nothing_stored(small, before)


async def test_every_problem_is_reported_with_its_index(small: Server) -> None:
    bad = {
        "topic": "a b",
        "event_id": " ",
        "timestamp": "2026-11-21",
        "source": "s",
        "payload": [],
        "extra": 1,
    }
    with trio.fail_after(10):
        response = await small.publish([event(), bad, 42])
    details = response.json()["details"]
    assert {(d["index"], d["field"]) for d in details} == {
        (1, "topic"),
        (1, "event_id"),
        (1, "timestamp"),
        (1, "payload"),
        (1, "extra"),
        (2, None),
    }


async def test_ndjson_index_is_the_line_number(small: Server) -> None:
    body = "\n".join(
        [json.dumps(event(event_id="1")), "", json.dumps(event(event_id="2", timestamp="nope"))]
    )
    before = await small.stats()
    with trio.fail_after(10):
        response = await small.client.post("/publish", content=body, headers=NDJSON)
    assert response.status_code == 422
    assert [(d["index"], d["field"]) for d in response.json()["details"]] == [(2, "timestamp")]
    await assert_nothing_stored(small, before)


# Found by the decoder fuzzer (fuzz/regressions/publish/dup-key.*): a field given twice, its first
# value invalid. The typed decode checks every occurrence; a JSON object keeps the last, so the
# field-by-field check found no fault and the event was dropped while the request got a 200.
DUP_KEY = (
    '{"topic": "t", "event_id": "2", "timestamp": "nope", '
    '"timestamp": "2026-11-21T10:00:00Z", "source": "s"}'
)


@pytest.mark.parametrize(
    ("body", "headers", "index"),
    [
        (f"[{json.dumps(event(event_id='1'))}, {DUP_KEY}]", JSON, 1),
        (f'{{"events": [{DUP_KEY}]}}', JSON, 0),
        (DUP_KEY, JSON, 0),
        (f"{json.dumps(event(event_id='1'))}\n{DUP_KEY}\n", NDJSON, 1),
    ],
    ids=["array", "wrapper", "object", "ndjson"],
)
async def test_an_invalid_first_copy_of_a_field_is_422_never_a_silent_drop(
    small: Server, body: str, headers: dict[str, str], index: int
) -> None:
    before = await small.stats()
    with trio.fail_after(10):
        response = await small.client.post("/publish", content=body, headers=headers)
    assert response.status_code == 422, response.text
    [detail] = response.json()["details"]
    assert (detail["index"], detail["field"]) == (index, "timestamp")
    assert "given more than once" in detail["message"]
    await assert_nothing_stored(small, before)


@pytest.mark.parametrize(
    "body",
    ["[]", '{"events": []}', "42", '"x"', "null", "\n"],
    ids=["empty array", "empty wrapper", "number", "string", "null", "ndjson-like blank"],
)
async def test_empty_or_shapeless_bodies_are_422_with_empty_details(
    small: Server, body: str
) -> None:
    before = await small.stats()
    headers = NDJSON if body == "\n" else JSON
    with trio.fail_after(10):
        response = await small.client.post("/publish", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["details"] == []
    await assert_nothing_stored(small, before)


async def test_wrapper_with_other_keys_is_422(small: Server) -> None:
    with trio.fail_after(10):
        response = await small.publish({"events": [event()], "meta": 1})
    assert response.status_code == 422
    assert "meta" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'[{"topic": "a",', JSON),
        (b"\xff\xfe not utf-8", JSON),
        (b"", JSON),
        (json.dumps(event()).encode() + b"\n{oops}\n", NDJSON),
        (b"not gzip at all", {**JSON, "Content-Encoding": "gzip"}),
        (gzip.compress(json.dumps(event()).encode())[:-6], {**JSON, "Content-Encoding": "gzip"}),
    ],
    ids=["truncated", "invalid utf-8", "empty", "bad ndjson line", "bad gzip", "truncated gzip"],
)
async def test_malformed_bodies_are_400(
    small: Server, body: bytes, headers: dict[str, str]
) -> None:
    before = await small.stats()
    with trio.fail_after(10):
        response = await small.client.post("/publish", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed"
    await assert_nothing_stored(small, before)


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"Content-Type": "text/plain"}, "Content-Type: application/json"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "Content-Type: application/json"),
        ({**JSON, "Content-Encoding": "br"}, "Content-Encoding: gzip"),
    ],
)
async def test_unsupported_media_is_415_and_shows_the_header_to_send(
    small: Server, headers: dict[str, str], named: str
) -> None:
    with trio.fail_after(10):
        response = await small.client.post("/publish", content=json.dumps(event()), headers=headers)
    assert response.status_code == 415
    assert named in response.json()["message"]


async def test_limits_are_413_and_name_the_limit(small: Server) -> None:
    before = await small.stats()
    huge = json.dumps([event(event_id=str(i), payload={"p": "x" * 200}) for i in range(5)])
    bomb = gzip.compress(
        json.dumps([event(payload={"p": " " * 200})] + [event()] * 3).encode() + b" " * 10_000
    )
    six = [event(event_id=str(i)) for i in range(6)]
    with trio.fail_after(10):
        body_limit = await small.client.post(
            "/publish", content=(huge + " " * 4096).encode(), headers=JSON
        )
        inflated = await small.client.post(
            "/publish", content=bomb, headers={**JSON, "Content-Encoding": "gzip"}
        )
        batch = await small.publish(six)
        ndjson_batch = await small.client.post(
            "/publish", content="\n".join(json.dumps(e) for e in six), headers=NDJSON
        )
    assert [r.status_code for r in (body_limit, inflated, batch, ndjson_batch)] == [413] * 4
    assert "AGGREGATOR_MAX_BODY_BYTES" in body_limit.json()["message"]
    assert "decompressed" in inflated.json()["message"]
    assert "AGGREGATOR_MAX_BATCH_EVENTS" in batch.json()["message"]
    assert "6 events" in ndjson_batch.json()["message"]
    await assert_nothing_stored(small, before)


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 1000):
        yield body[start : start + 1000]


@pytest.mark.parametrize(
    ("method", "path", "chunked", "status"),
    [
        ("POST", "/publish", False, 413),
        ("POST", "/publish", True, 413),
        ("GET", "/events", False, 413),
        ("PATCH", "/publish", False, 405),
    ],
    ids=["publish", "publish-chunked", "read-route", "wrong-method"],
)
async def test_a_body_refused_unread_closes_the_connection_and_says_so(
    small: Server, method: str, path: str, chunked: bool, status: int
) -> None:
    """Found by the server campaign (fuzz/server.py): a 413 sent before the body was read, or a
    405 for /publish that never read it, made the server close the keep-alive connection without
    saying so; the client's next request on it was lost now and then ("Server disconnected
    without sending a response")."""
    body = b"[" * (5000 if status == 413 else 10)  # 5000 is over the 4096-byte limit
    with trio.fail_after(10):
        response = await small.client.request(
            method, path, content=_chunked(body) if chunked else body, headers=JSON
        )
        after = await small.client.get("/health")
    assert response.status_code == status, response.text
    assert response.headers.get("connection") == "close"
    assert after.status_code == 200


async def test_largest_allowed_values_are_accepted(small: Server) -> None:
    payload = {"p": "x" * (256 - len('{"p":""}'))}  # exactly the 256-byte limit
    emoji_topic = "😀" * 255  # 255 code points, 1020 bytes
    with trio.fail_after(10):
        response = await small.client.post(
            "/publish",
            headers=JSON,
            content=json.dumps(
                event(topic=emoji_topic, event_id="e" * 255, payload=payload), separators=(",", ":")
            ),
        )
    assert response.status_code == 200, response.text
