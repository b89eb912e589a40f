"""OTLP/JSON values built by ``otlp_values`` are the messages protobuf's ``json_format`` builds
of the same JSON (so a record's content hash does not depend on which one read it), and what
one refuses the other refuses."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValueList

from aggregator.decoders.otlp_values import MAX_DEPTH, fill_any, fill_pairs

SCALARS: list[Any] = [
    None, True, False, 0, 1, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 1.0, 1.5, -0.0,
    1e308, 1e-320, "", "x", "5", " 5", "5 ", "1e3", "1.5", "-1", "0x10", "NaN", "nan",
    "Infinity", "-Infinity", "inf", "1_000", "YWJj", "YWJ", "YW Jj", "a-_b", "+/==", "é", [], {},
]  # fmt: skip
KEYS = ["stringValue", "boolValue", "intValue", "doubleValue", "bytesValue", "string_value",
        "int_value", "bytes_value"]  # fmt: skip
SHAPES: list[Any] = [
    {},
    {"unknown": 1},
    {"stringValue": "a", "intValue": "1"},
    {"stringValue": "a", "string_value": "b"},
    {"stringValue": None, "intValue": "1"},
    {"arrayValue": {}},
    {"arrayValue": None},
    {"arrayValue": {"values": None}},
    {"arrayValue": {"values": []}},
    {"arrayValue": {"values": [{}, {"intValue": 2}, {"arrayValue": {"values": [{}]}}]}},
    {"arrayValue": {"values": [None]}},
    {"arrayValue": {"values": {}}},
    {"array_value": {"values": [{"string_value": "s"}]}},
    {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "1"}}, {"key": "a"}]}},
    {"kvlistValue": {"values": [{"key": None, "value": None}, {"value": {}}, {}]}},
    {"kvlistValue": {"values": [{"key": 1}]}},
    {"kvlistValue": {"values": [None]}},
    {"kvlistValue": {"values": [{"key": "k", "value": 5}]}},
    {"kvlist_value": {"values": [{"key": "b", "value": {"bytesValue": "AAEC"}}]}},
    5,
]  # fmt: skip
# json_format takes a string or a list where a message is due as an empty message; these are
# refused instead (no OTLP encoder writes them).
STRICTER: list[Any] = [
    [],
    "x",
    {"arrayValue": []},
    {"arrayValue": "ab"},
    {"kvlistValue": []},
    {"arrayValue": {"values": ["x"]}},
    {"kvlistValue": {"values": [[]]}},
]


def _both(value: Any) -> tuple[Any, Any]:
    expected: Any
    try:
        expected = json_format.ParseDict(value, AnyValue(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError):
        expected = "refused"
    built: Any = AnyValue()
    try:
        fill_any(built, value)
    except (json_format.ParseError, ValueError, TypeError):
        built = "refused"
    return built, expected


@pytest.mark.parametrize("key", KEYS)
def test_every_scalar_reads_as_json_format_reads_it(key: str) -> None:
    for scalar in SCALARS:
        built, expected = _both({key: scalar})
        assert built == expected, (key, scalar)
        if expected != "refused":  # equal messages, equal bytes: the same hash
            assert built.SerializeToString(deterministic=True) == expected.SerializeToString(
                deterministic=True
            )


@pytest.mark.parametrize("value", SHAPES, ids=range(len(SHAPES)))
def test_every_shape_reads_as_json_format_reads_it(value: Any) -> None:
    assert _both(msgspec.json.decode(msgspec.json.encode(value)))[0] == _both(value)[1]


@pytest.mark.parametrize("value", STRICTER, ids=range(len(STRICTER)))
def test_only_an_object_is_a_message(value: Any) -> None:
    built, expected = _both(value)
    assert (built, expected != "refused") == ("refused", True)


def test_key_value_lists_read_as_json_format_reads_them() -> None:
    pairs = [{"key": "a", "value": {"doubleValue": "NaN"}}, {"key": "b"}, {"value": {}}]
    expected = json_format.ParseDict({"values": pairs}, KeyValueList())
    built = KeyValueList()
    fill_pairs(built.values, pairs)
    assert str(built) == str(expected)  # NaN != NaN: compared as text


def test_nesting_is_bounded() -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(MAX_DEPTH):
        value = {"arrayValue": {"values": [value]}}
    fill_any(AnyValue(), value)
    with pytest.raises(json_format.ParseError, match=f"more than {MAX_DEPTH} levels"):
        fill_any(AnyValue(), {"arrayValue": {"values": [value]}})
