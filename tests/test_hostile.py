"""Hostile input against a real server process: arbitrary bytes, JSON shapes, huge numbers, deep
nesting, invalid UTF-8, NUL bytes and enormous strings at POST /publish and at the query
parameters of the read endpoints. Never a 5xx, never a partial batch stored, still serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ROOT, ServerProcess, event, running_server

EXAMPLES = 150  # per property
HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same inputs every run: the count below is a fact, not a budget
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
UTF8_SPLICES = 4 * 6 * 4  # every field × bad sequence × position: fewer than EXAMPLES
# Inputs each property runs (each test asserts its own); docs/reliability.md states the sum.
RUNS = {
    "test_arbitrary_bytes": EXAMPLES,
    "test_json_shapes_a_bad_event_refuses_the_whole_batch": EXAMPLES,
    "test_any_json_document": EXAMPLES,
    "test_deep_nesting": 40,
    "test_invalid_utf8_and_nul_bytes_in_fields": UTF8_SPLICES,
    "test_enormous_strings": EXAMPLES,
    "test_query_parameters_of_the_read_endpoints": EXAMPLES,
    "test_raw_bytes_in_the_query_string": EXAMPLES,
}
COUNTED = ("received", "unique_processed", "duplicate_dropped")


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data = tmp_path_factory.mktemp("hostile")
    with (
        running_server(data, "--max-body-bytes", "1048576") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        yield client
        assert_serving(client, server)


def assert_serving(client: httpx.Client, server: ServerProcess) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert "Traceback" not in server.log(), server.log()[-3000:]


def counters(http: httpx.Client) -> tuple[int, ...]:
    stats = http.get("/stats").json()
    return tuple(stats[k] for k in COUNTED)


def check_publish(http: httpx.Client, content: bytes, headers: dict[str, str]) -> None:
    """No 5xx; a refused request changes nothing; an accepted one counts all of its events."""
    before = counters(http)
    response = http.post("/publish", content=content, headers=headers)
    after = counters(http)
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if response.status_code == 200:
        assert after[0] - before[0] == body["accepted"]
        assert after[1] - before[1] == body["stored"]
    else:
        assert set(body) >= {"error", "message"}
        assert after == before, "a refused request changed the counters"


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.text(max_size=300)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
field_value = json_value | st.sampled_from(
    ["", " ", "\x00", "a\x00b", "x" * 300, "2026-11-21T10:00:00Z"]
)
hostile_event = st.fixed_dictionaries(
    {},
    optional={
        k: field_value for k in ("topic", "event_id", "timestamp", "source", "payload", "seq")
    },
)
valid_event = st.builds(
    lambda t, e, p: event(t, e, payload=p),
    st.sampled_from(["a", "b.c", "δ"]),
    st.text(min_size=1, max_size=20).filter(lambda s: not s.isspace()),
    st.dictionaries(st.text(max_size=5), json_leaf, max_size=3),
)


def test_arbitrary_bytes(http: httpx.Client) -> None:
    ran = 0

    @HOSTILE
    @given(
        st.binary(max_size=2000), st.sampled_from(["application/json", "application/x-ndjson", ""])
    )
    def example(body: bytes, content_type: str) -> None:
        nonlocal ran
        ran += 1
        check_publish(http, body, {"Content-Type": content_type} if content_type else {})

    example()
    assert ran == RUNS["test_arbitrary_bytes"]


def test_json_shapes_a_bad_event_refuses_the_whole_batch(http: httpx.Client) -> None:
    ran = 0

    @HOSTILE
    @given(st.lists(valid_event | hostile_event, min_size=1, max_size=8))
    def example(events: list[dict[str, Any]]) -> None:
        nonlocal ran
        ran += 1
        check_publish(http, json.dumps(events).encode(), {"Content-Type": "application/json"})

    example()
    assert ran == RUNS["test_json_shapes_a_bad_event_refuses_the_whole_batch"]


def test_any_json_document(http: httpx.Client) -> None:
    ran = 0

    @HOSTILE
    @given(json_value)
    def example(value: Any) -> None:
        nonlocal ran
        ran += 1
        check_publish(http, json.dumps(value).encode(), {"Content-Type": "application/json"})

    example()
    assert ran == RUNS["test_any_json_document"]


def test_deep_nesting(http: httpx.Client) -> None:
    ran = 0

    @settings(HOSTILE, max_examples=40)  # bodies up to 1 MB: a smaller budget
    @given(
        st.integers(min_value=1, max_value=60_000), st.sampled_from(["[", '{"a":', '[{"payload":'])
    )
    def example(depth: int, opener: str) -> None:
        nonlocal ran
        ran += 1
        closer = {"[": "]", '{"a":': "}", '[{"payload":': "}]"}[opener]
        body = (opener * depth + "1" + closer * depth).encode()
        check_publish(http, body, {"Content-Type": "application/json"})

    example()
    assert ran == RUNS["test_deep_nesting"]


def test_invalid_utf8_and_nul_bytes_in_fields(http: httpx.Client) -> None:
    ran = 0

    @HOSTILE
    @given(
        st.sampled_from(["topic", "event_id", "source", "timestamp"]),
        st.sampled_from(
            [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\\u0000", b"\\ud800"]
        ),
        st.integers(min_value=0, max_value=3),
    )
    def example(field: str, bad: bytes, where: int) -> None:
        nonlocal ran
        ran += 1
        good = json.dumps(event("u", "x")).encode()
        marker = json.dumps(event("u", "x")[field]).encode()
        spliced = marker[:-1][: where + 1] + bad + marker[-1:]
        check_publish(http, good.replace(marker, spliced, 1), {"Content-Type": "application/json"})

    example()
    assert ran == RUNS["test_invalid_utf8_and_nul_bytes_in_fields"]


def test_enormous_strings(http: httpx.Client) -> None:
    ran = 0

    @HOSTILE
    @given(st.sampled_from(["topic", "event_id", "source", "payload"]), st.integers(0, 900_000))
    def example(field: str, size: int) -> None:
        nonlocal ran
        ran += 1
        body = event("big", f"e{size}")
        body[field] = {"k": "x" * size} if field == "payload" else "x" * size
        check_publish(http, json.dumps([body]).encode(), {"Content-Type": "application/json"})

    example()
    assert ran == RUNS["test_enormous_strings"]


query_value = (
    st.text(max_size=50)
    | st.integers(min_value=-(2**80), max_value=2**80).map(str)
    | st.sampled_from(["", "1e3", "0x10", "NaN", "inf", "-0", "1" * 400, "\x00", "٣"])
)


def test_query_parameters_of_the_read_endpoints(http: httpx.Client) -> None:
    ran = 0

    @HOSTILE
    @given(
        st.sampled_from(["/events", "/stats", "/health"]),
        st.dictionaries(st.sampled_from(["topic", "limit", "after", "offset", "x"]), query_value),
    )
    def example(path: str, params: dict[str, str]) -> None:
        nonlocal ran
        ran += 1
        response = http.get(path, params=params)
        assert response.status_code in (200, 422), response.text
        if path == "/events" and response.status_code == 200:
            assert isinstance(response.json(), list)

    example()
    assert ran == RUNS["test_query_parameters_of_the_read_endpoints"]


def test_raw_bytes_in_the_query_string(http: httpx.Client) -> None:
    """Percent-encoded arbitrary bytes: invalid UTF-8, NUL, control characters."""
    ran = 0

    @HOSTILE
    @given(st.binary(min_size=1, max_size=200), st.sampled_from(["topic", "limit", "after"]))
    def example(raw: bytes, name: str) -> None:
        nonlocal ran
        ran += 1
        query = f"{name}={quote_from_bytes(raw, safe='')}&limit=5"
        response = http.get(httpx.URL("/events", query=query.encode()))
        assert response.status_code in (200, 422), response.text

    example()
    assert ran == RUNS["test_raw_bytes_in_the_query_string"]


def test_the_documented_count_is_what_runs() -> None:
    figure = f"**{sum(RUNS.values()):,} inputs, 0 × 5xx**"
    assert figure in (ROOT / "docs" / "reliability.md").read_text()
