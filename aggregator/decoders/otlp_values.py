"""OTLP/JSON ``AnyValue`` trees and key-value lists, built into their protobuf messages directly.

protobuf's ``json_format`` is pure Python and takes about 10 µs a message: one 3.9 MB OTLP/JSON
body whose record held an array of 1.3 million empty values kept a decode thread for 13 s. Values
and attributes are where a body's messages can be counted in millions (records are at most
``AGGREGATOR_MAX_BATCH_EVENTS``), so they are built here, about fifteen times faster, with
``json_format``'s rules for each scalar (tests/test_otlp_values.py compares the two on every
edge case): the same JSON gives the same message, so the same content hash as its protobuf.
Stricter in one way: where a message is due, only a JSON object is one (``json_format`` took a
string or a list as an empty message).
"""

from __future__ import annotations

import base64
import math
from typing import Any

from google.protobuf.json_format import ParseError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

# AnyValue levels inside one value; protobuf's own decoder stops at 100 message levels, which
# an OTLP record's value reaches at about this depth.
MAX_DEPTH = 48
_SCALARS = {
    "stringValue": "string_value",
    "boolValue": "bool_value",
    "intValue": "int_value",
    "doubleValue": "double_value",
    "bytesValue": "bytes_value",
    "arrayValue": "array_value",
    "kvlistValue": "kvlist_value",
}
_NAMES = {**_SCALARS, **{name: name for name in _SCALARS.values()}}


def fill_pairs(target: Any, pairs: Any, depth: int = 0) -> None:
    """Append the JSON key-value list ``pairs`` to the repeated ``KeyValue`` field ``target``."""
    if pairs is None:
        return
    if not isinstance(pairs, list):
        raise ParseError(f"attributes or values must be a JSON array, not {_kind(pairs)}")
    for pair in pairs:
        if not isinstance(pair, dict):
            raise ParseError(f"a key-value pair must be a JSON object, not {_kind(pair)}")
        kv = target.add()
        key = pair.get("key")
        if key is not None:
            if not isinstance(key, str):
                raise ParseError(f"a key must be a string, not {_kind(key)}")
            kv.key = key
        value = pair.get("value")
        if value is not None:
            fill_any(kv.value, value, depth)


def fill_any(target: AnyValue, value: Any, depth: int = 0) -> None:
    """Set the ``AnyValue`` ``target`` from its JSON form ``value`` (a JSON object)."""
    if depth > MAX_DEPTH:
        raise ParseError(f"a value is nested more than {MAX_DEPTH} levels deep, the limit")
    if not isinstance(value, dict):
        raise ParseError(f"an AnyValue must be a JSON object, not {_kind(value)}")
    target.SetInParent()
    given = [name for name in value if name in _NAMES and value[name] is not None]
    if len(given) > 1:
        raise ParseError(f"an AnyValue has more than one value: {', '.join(given)}")
    if not given:
        return
    item = value[given[0]]
    field = _NAMES[given[0]]
    if field in ("array_value", "kvlist_value"):
        if not isinstance(item, dict):
            raise ParseError(f"{given[0]} must be a JSON object, not {_kind(item)}")
        holder = getattr(target, field)
        holder.SetInParent()
        values = item.get("values")
        if field == "kvlist_value":
            fill_pairs(holder.values, values, depth + 1)
            return
        if values is None:
            return
        if not isinstance(values, list):
            raise ParseError(f"arrayValue.values must be a JSON array, not {_kind(values)}")
        for element in values:
            if element is None:
                raise ParseError("null is not an element of arrayValue.values")
            fill_any(holder.values.add(), element, depth + 1)
    elif field == "string_value":
        if not isinstance(item, str):
            raise ParseError(f"stringValue must be a string, not {_kind(item)}")
        target.string_value = item
    elif field == "bool_value":
        if not isinstance(item, bool):
            raise ParseError(f"boolValue must be true or false, not {_kind(item)}")
        target.bool_value = item
    elif field == "int_value":
        target.int_value = _integer(item)
    elif field == "double_value":
        target.double_value = _double(item)
    else:
        if not isinstance(item, str):
            raise ParseError(f"bytesValue must be a base64 string, not {_kind(item)}")
        encoded = item.encode("utf-8")  # json_format's reading: URL-safe or not, padding or not
        target.bytes_value = base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))


def _integer(value: Any) -> int:
    """json_format's reading of an int64: a number or a string, an integral float too."""
    if isinstance(value, bool):
        raise ParseError(f"bool value {value} is not acceptable for intValue")
    if isinstance(value, float) and not value.is_integer():
        raise ParseError(f"couldn't parse integer: {value}")
    if isinstance(value, str) and " " in value:
        raise ParseError(f"couldn't parse integer: {value!r}")
    if not isinstance(value, (int, float, str)):
        raise ParseError(f"intValue must be a number or a string, not {_kind(value)}")
    try:
        return int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise ParseError(f"couldn't parse integer: {value!r}") from None
        if not number.is_integer():
            raise ParseError(f"couldn't parse non-integer string: {value!r}") from None
        return int(number)


def _double(value: Any) -> float:
    """json_format's reading of a double: a number, or a string such as "NaN" or "1.5"."""
    if isinstance(value, float):
        if math.isnan(value):
            raise ParseError('couldn\'t parse NaN, use quoted "NaN" instead')
        if math.isinf(value):
            raise ParseError('couldn\'t parse Infinity or value too large, use quoted "Infinity"')
    if value == "nan":
        raise ParseError('couldn\'t parse float "nan", use "NaN" instead')
    if value == "-Infinity":
        return -math.inf
    if value == "Infinity":
        return math.inf
    if value == "NaN":
        return math.nan
    if not isinstance(value, (int, float, str)):
        raise ParseError(f"doubleValue must be a number or a string, not {_kind(value)}")
    try:
        return float(value)
    except ValueError:
        raise ParseError(f"couldn't parse float: {value!r}") from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
