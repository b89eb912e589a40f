"""The OTLP and Loki decoders against the contract every decoder keeps (``fuzz/contract.py``):
valid bodies damaged byte by byte, and shapes found to break them, give well-formed events or a
4xx ``Rejection``, never another exception, the same way twice. Seeded: the same run each time."""

from __future__ import annotations

import random
from collections.abc import Callable

import cramjam
import pytest
from google.protobuf import json_format

from aggregator.decoders.loki import decode_loki
from aggregator.decoders.otlp import decode_otlp
from aggregator.messages import Decoder, Limits
from bench.shippers import loki_json, loki_pushes, otlp_requests
from fuzz.contract import check

# Small limits, so that damaged bodies reach the limits' paths too.
LIMITS = Limits(max_body_bytes=65536, max_batch_events=150, max_payload_bytes=512)
PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}
OTLP = otlp_requests(1)[0]
LOKI = loki_pushes(1)[0]
SEEDS: dict[str, tuple[Decoder, dict[str, str], Callable[[], bytes]]] = {
    "otlp-protobuf": (decode_otlp, PROTOBUF, OTLP.SerializeToString),
    "otlp-json": (decode_otlp, JSON, lambda: json_format.MessageToJson(OTLP).encode()),
    "loki-json": (decode_loki, JSON, lambda: loki_json(LOKI)),
    "loki-protobuf": (
        decode_loki,
        PROTOBUF,
        lambda: bytes(cramjam.snappy.compress_raw(LOKI.SerializeToString())),
    ),
}
# Each once broke a decoder (a TypeError or a UnicodeDecodeError escaped it).
FOUND = [
    (decode_otlp, b"5"),
    (decode_otlp, b"null"),
    (decode_otlp, b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": '
     b'{"stringValue": "\xff"}}]}]}]}'),
    (decode_otlp, b'{"resourceLogs": [{"scopeLogs": [{"logRecords": '
     b'[{"timeUnixNano": 1e300}]}]}]}'),
    (decode_loki, b'{"streams": [{"stream": {"a": "\xc3"}, "values": [["1", "x"]]}]}'),
    (decode_loki, b'{"streams": [{"stream": {"a": "b"}, "values": [["1", "x", {"k": 5}]]}]}'),
]  # fmt: skip


def damage(body: bytes, rng: random.Random) -> bytes:
    out = bytearray(body)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(out))
        roll = rng.random()
        if roll < 0.5:
            out[at] = rng.randrange(256)
        elif roll < 0.75:
            del out[at : at + rng.randint(1, 20)]
        else:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
    return bytes(out)


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_damaged_bodies_keep_the_decoder_contract(seed: str) -> None:
    decode, headers, make = SEEDS[seed]
    body = make()
    assert check(decode, body, headers, LIMITS, allows_empty=True)  # the seed itself is valid
    rng = random.Random(seed)
    for _ in range(1500):
        check(decode, damage(body, rng), headers, LIMITS, allows_empty=True)


def test_damaged_snappy_content_keeps_the_decoder_contract() -> None:
    raw = LOKI.SerializeToString()
    rng = random.Random(2)
    for _ in range(1500):
        body = bytes(cramjam.snappy.compress_raw(damage(raw, rng)))
        check(decode_loki, body, PROTOBUF, LIMITS, allows_empty=True)


@pytest.mark.parametrize(("decode", "body"), FOUND)
def test_shapes_that_once_broke_a_decoder_are_rejections(decode: Decoder, body: bytes) -> None:
    outcome = check(decode, body, JSON, LIMITS, allows_empty=True)
    assert not isinstance(outcome, list), outcome
    assert outcome.status == 400
