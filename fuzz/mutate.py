"""Damage for the HTTP campaign: byte mutations of valid bodies, and hostile query strings.

Deterministic for a given ``random.Random``. The byte mutations are libFuzzer's simplest ones
(flip, replace, insert, erase, duplicate, truncate, splice) plus JSON tokens that have broken
decoders before: truncated wrappers, deep nesting, huge numbers, lone surrogates, invalid UTF-8.
"""

from __future__ import annotations

import random
from urllib.parse import quote_from_bytes

TOKENS = (
    b'{"events": [',
    b'{"topic": "a"',
    b'"timestamp": ',
    b'"payload": ',
    b'"seq": 1, ',
    b"1e999",
    b"-0.0e-400",
    b"123456789012345678901234567890",
    b'"\\ud800"',
    b'"\\u0000"',
    b"\xc3\x28",
    b"\xff\xfe",
    b"\x00",
    b"null",
    b"[]",
    b"{}",
    b"\r\n",
    b"\n\n",
    b'"2026-02-30T25:61:61+99:99"',
    b'"0001-01-01T00:00:00+00:01"',
    b'"9999-12-31T23:59:59-00:01"',
    b"\x1f\x8b\x08\x00",  # a gzip header in the wrong place
)
BYTES = b'\x00\x01\x7f\x80\xc3\xff"{}[],:\\ \n\r\t0-e.'


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """``data`` with 1–4 mutations; ``others`` are bodies to splice from."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out = _ONE_OF[rng.randrange(len(_ONE_OF))](rng, out, others)
    return bytes(out)


def _flip(rng: random.Random, out: bytearray, others: list[bytes]) -> bytearray:
    if out:
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return out


def _replace(rng: random.Random, out: bytearray, others: list[bytes]) -> bytearray:
    if out:
        out[rng.randrange(len(out))] = rng.choice(BYTES)
    return out


def _insert(rng: random.Random, out: bytearray, others: list[bytes]) -> bytearray:
    at = rng.randint(0, len(out))
    out[at:at] = rng.choice(TOKENS)
    return out


def _erase(rng: random.Random, out: bytearray, others: list[bytes]) -> bytearray:
    if out:
        start = rng.randrange(len(out))
        del out[start : start + rng.randint(1, 16)]
    return out


def _duplicate(rng: random.Random, out: bytearray, others: list[bytes]) -> bytearray:
    if out:
        start = rng.randrange(len(out))
        piece = out[start : start + rng.randint(1, 64)]
        at = rng.randint(0, len(out))
        out[at:at] = piece * rng.randint(1, 8)
    return out


def _truncate(rng: random.Random, out: bytearray, others: list[bytes]) -> bytearray:
    return out[: rng.randint(0, len(out))]


def _splice(rng: random.Random, out: bytearray, others: list[bytes]) -> bytearray:
    other = rng.choice(others) if others else b""
    return out[: rng.randint(0, len(out))] + bytearray(other[rng.randint(0, len(other)) :])


def _nest(rng: random.Random, out: bytearray, others: list[bytes]) -> bytearray:
    depth = rng.choice((64, 1000, 30_000))
    opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
    at = rng.randint(0, len(out))
    out[at:at] = opener * depth + b"1" + closer * rng.choice((0, depth))
    return out


_ONE_OF = (_flip, _replace, _insert, _erase, _duplicate, _truncate, _splice, _nest)

QUERY_NAMES = ("topic", "limit", "after", "offset", "x", "", "topic[]", "LIMIT")
QUERY_VALUES = (
    "",
    "0",
    "-1",
    "1",
    "1000",
    "1001",
    "1e3",
    "0x10",
    " 5",
    "5 ",
    "+5",
    "٣",  # an Arabic-Indic digit: int() takes it
    "9" * 40,
    "-" + "9" * 400,
    "nan",
    "auth",
    "métriques",
    "a b",
    "a\x00b",
    "%",
    "%zz",
    "\ud800",
    "'; DROP TABLE events; --",
    "../../etc/passwd",
    "x" * 8000,
)


def hostile_query(rng: random.Random) -> str:
    """A query string: known names with hostile values, repeats, raw bytes, broken escapes."""
    parts = []
    for _ in range(rng.randint(0, 4)):
        name = rng.choice(QUERY_NAMES)
        if rng.random() < 0.2:
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 24)))
            value = quote_from_bytes(raw, safe=rng.choice(("", "%=&+", "/:@!$'()*,;")))
        else:
            value = _encode(rng.choice(QUERY_VALUES), rng)
        parts.append(f"{name}={value}" if rng.random() < 0.9 else name)
    return "&".join(parts)


def _encode(value: str, rng: random.Random) -> str:
    raw = value.encode("utf-8", "surrogatepass")
    return quote_from_bytes(raw, safe="" if rng.random() < 0.5 else "%+")
