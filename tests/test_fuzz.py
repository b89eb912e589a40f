"""The fuzzers (fuzz/): their seeds, their oracle, and a short deterministic run of each.

The long runs are commands (``make fuzz``); their figures are in docs/reliability.md.
"""

from __future__ import annotations

import gzip
import random
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import cramjam
import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from aggregator.messages import Decoder, EventRecord, Limits, Rejection
from fuzz import inputs, make_seeds, mutate, targets
from fuzz.campaign import Campaign
from fuzz.contract import Violation, check
from fuzz.server import run
from tests.support import ROOT

LIMITS = targets.LIMITS
PROTOBUF = "application/x-protobuf"
RECORD = EventRecord("t", "e", "2026-11-21T10:00:00Z", "s", "{}")


@pytest.mark.parametrize("target", targets.TARGETS, ids=targets.names())
def test_every_kind_has_a_seed_and_every_seed_is_a_valid_request(target: targets.Target) -> None:
    seen = set()
    for path in sorted(target.seeds.iterdir()):
        kind = targets.kind_of(path)
        assert kind in target.kinds, f"{path.name}: kind {kind!r} is not one of {target.kinds}"
        seen.add(kind)
    assert seen == set(target.kinds), f"kinds without a seed: {set(target.kinds) - seen}"
    for path, body, headers in inputs.seeds(target):
        outcome = check(target.decode, body, headers, LIMITS)
        assert isinstance(outcome, list) and outcome, f"{path.name}: {outcome}"


@pytest.mark.parametrize("target", targets.TARGETS, ids=targets.names())
def test_every_fresh_body_is_a_valid_request_of_its_kind(target: targets.Target) -> None:
    assert target.fresh is not None  # the campaign sends every door new events
    rng = random.Random(1)
    kinds = set()
    for _ in range(100):
        kind, body = target.fresh(rng)
        kinds.add(kind)
        outcome = check(target.decode, body, target.kinds[kind], LIMITS)
        assert isinstance(outcome, list) and outcome, f"{kind}: {outcome}"
    assert len(kinds) > 1


@pytest.mark.parametrize("target", targets.TARGETS, ids=targets.names())
def test_every_regression_input_keeps_the_contract(target: targets.Target) -> None:
    found = list(inputs.regressions(target))
    for path, body, headers in found:
        outcome = check(target.decode, body, headers, LIMITS, allows_empty=target.allows_empty)
        assert isinstance(outcome, Rejection), f"{path.name} is not refused: {outcome}"
    if target.name == "publish":
        assert {p.name for p, _, _ in found} >= {"issue-18.ndjson", "dup-key.json"}


def test_an_input_names_its_headers_and_seeds_keep_their_bytes() -> None:
    target = targets.target("publish")
    body = b'{"topic": "t"}'
    assert inputs.decode(target, inputs.encode(target, "ndjson.gz", body)) == (
        body,
        {"content-type": "application/x-ndjson", "content-encoding": "gzip"},
    )
    free = len(targets.header_sets(target))
    assert inputs.decode(target, bytes([free]) + b"text/x\nbr\nBODY") == (
        b"BODY",
        {"content-type": "text/x", "content-encoding": "br"},
    )
    index = list(target.kinds).index("json.gz")
    wrapped, headers = inputs.decode(target, bytes([index | inputs.COMPRESS]) + body)
    assert headers["content-encoding"] == "gzip" and wrapped.startswith(b"\x1f\x8b")
    # Loki's protobuf: the harness puts the raw bytes in snappy, then in gzip when asked.
    loki = targets.target("loki")
    index = list(loki.kinds).index("pb.snappy.gz")
    framed, headers = inputs.decode(loki, bytes([index | inputs.COMPRESS]) + b"raw")
    assert headers == {"content-type": "application/x-protobuf", "content-encoding": "gzip"}
    assert bytes(cramjam.snappy.decompress_raw(gzip.decompress(framed))) == b"raw"
    seed = (loki.seeds / "push.pb.snappy").read_bytes()
    assert inputs.decode(loki, inputs.encode(loki, "pb.snappy", seed))[0] == seed


def test_the_seeds_are_what_make_seeds_writes(tmp_path: Path) -> None:
    """The checked-in protobuf, snappy and gzip seeds are reproducible from their script."""
    for name, files in (("bulk", make_seeds.bulk()), ("otlp", make_seeds.otlp()),
                        ("loki", make_seeds.loki())):  # fmt: skip
        on_disk = {p.name: p.read_bytes() for p in (targets.CORPUS / name).iterdir()}
        assert on_disk == files, name


def answer(status: int, body: object = None, media: str = "application/json") -> httpx.Response:
    if isinstance(body, bytes | str):
        return httpx.Response(status, content=body, headers={"content-type": media})
    return httpx.Response(status, json=body) if body is not None else httpx.Response(status)


def test_the_campaign_judges_each_door_by_the_answer_its_docs_give(tmp_path: Path) -> None:
    """The oracle of ``fuzz.server`` per door, against answers written here from the docs."""
    with httpx.Client() as client:
        campaign = Campaign(client, random.Random(1), tmp_path)

        def judge(name: str, body: bytes, headers: dict[str, str], got: httpx.Response) -> bool:
            target = targets.target(name)
            expected = check(target.decode, body, headers, LIMITS, allows_empty=True)
            return campaign.judge(target, body, headers, expected, got) is None

        ndjson = {"content-type": "application/x-ndjson"}
        bulk = b'{"create":{"_id":"1"}}\n{"host":"h"}\n{"delete":{"_id":"2"}}\n'
        delete = {
            "_index": "fuzz",
            "_id": "2",
            "status": 400,
            "error": {
                "type": "illegal_argument_exception",
                "reason": "events are immutable: delete is not supported",
            },
        }
        created = {"_index": "fuzz", "_id": "1", "_version": 1, "result": "created", "status": 201}
        first = {"took": 1, "errors": True, "items": [{"create": created}, {"delete": delete}]}
        assert judge("bulk", bulk, ndjson, answer(200, first))
        # The same create again: a 409, not a second 201.
        assert not judge("bulk", bulk, ndjson, answer(200, first))
        conflict = {
            "_index": "fuzz",
            "_id": "1",
            "status": 409,
            "error": {
                "type": "version_conflict_engine_exception",
                "reason": "[1]: version conflict, document already exists (current version "
                "[1]); events are stored once, the first copy is kept",
                "index": "fuzz",
            },
        }
        second = {"took": 0, "errors": True, "items": [{"create": conflict}, {"delete": delete}]}
        assert judge("bulk", bulk, ndjson, answer(200, second))
        refused = {"error": {"root_cause": [], "type": "x", "reason": "y"}, "status": 400}
        assert not judge("bulk", b"{", ndjson, answer(400, refused))

        protobuf = {"content-type": "application/x-protobuf"}
        partial = (targets.CORPUS / "otlp" / "partial.pb").read_bytes()
        none_refused = ExportLogsServiceResponse().SerializeToString()
        assert not judge("otlp", partial, protobuf, answer(200, none_refused, PROTOBUF))
        assert not judge("otlp", partial, protobuf, answer(200, {}))  # not in its encoding
        minimal = (targets.CORPUS / "otlp" / "minimal.alt.pb").read_bytes()
        assert judge("otlp", minimal, protobuf, answer(200, none_refused, PROTOBUF))
        status = Status(code=3, message="x").SerializeToString()
        assert not judge("otlp", b"\xff", protobuf, answer(400, status, PROTOBUF))

        json_headers = {"content-type": "application/json"}
        push = (targets.CORPUS / "loki" / "push.json").read_bytes()
        assert judge("loki", push, json_headers, answer(204))
        assert not judge("loki", push, json_headers, answer(200, {"accepted": 3}))
        message = "the body is not valid JSON: Input data was truncated\n"
        assert judge("loki", b"{", json_headers, answer(400, message, "text/plain"))
        assert not judge("loki", b"{", json_headers, answer(400, {"error": "malformed"}))


def decoder(result: object) -> Decoder:
    def decode(body: bytes, headers: Mapping[str, str], limits: Limits) -> list[EventRecord]:
        if isinstance(result, Exception):
            raise result
        return result  # type: ignore[return-value]

    return decode


@pytest.mark.parametrize(
    ("result", "rule"),
    [
        (KeyError("a bug"), "raised KeyError"),
        (Rejection(500, "internal", "x"), "not a 4xx"),
        (Rejection(422, "validation", " "), "message"),
        (Rejection(429, "busy", "later", retry_after=1), "retry later"),
        ([], "no event"),
        ([RECORD] * (LIMITS.max_batch_events + 1), "max_batch_events"),
        ([("t", "e", "2026-11-21T10:00:00Z", "s", "{}")], "not EventRecord"),
        ([RECORD._replace(topic="a b")], "topic"),
        ([RECORD._replace(topic="x" * 256)], "topic has 256"),
        ([RECORD._replace(event_id="")], "event_id has 0"),
        ([RECORD._replace(event_id=" \t")], "event_id is blank"),
        ([RECORD._replace(source="\n")], "source is blank"),
        ([RECORD._replace(timestamp="2026-11-21T10:00:00+00:00")], "timestamp"),
        ([RECORD._replace(timestamp="2026-02-30T10:00:00Z")], "real date-time"),
        ([RECORD._replace(payload="[]")], "JSON object"),
        ([RECORD._replace(payload='{"a": NaN}')], "JSON object"),
        ([RECORD._replace(payload='{"p": "' + "x" * LIMITS.max_payload_bytes + '"}')], "payload"),
        ([RECORD._replace(source="\ud800")], "UTF-8"),
    ],
)
def test_the_oracle_names_each_broken_rule(result: object, rule: str) -> None:
    with pytest.raises(Violation, match=re.escape(rule)):
        check(decoder(result), b"", {}, LIMITS)


def test_the_oracle_accepts_what_the_contract_allows() -> None:
    records = [
        RECORD,
        RECORD._replace(timestamp="0001-01-01T00:00:00.000001Z", payload='{"n":1e999}'),
    ]
    assert check(decoder(records), b"", {}, LIMITS) == records
    refused = check(decoder(Rejection(415, "unsupported_media_type", "send JSON")), b"", {}, LIMITS)
    assert isinstance(refused, Rejection) and refused.status == 415


def test_the_oracle_catches_a_decoder_that_answers_differently_twice() -> None:
    answers = iter([[RECORD], [RECORD._replace(event_id="other")]])

    def flaky(body: bytes, headers: Mapping[str, str], limits: Limits) -> list[EventRecord]:
        return next(answers)

    with pytest.raises(Violation, match="not deterministic"):
        check(flaky, b"", {}, LIMITS)


def test_mutations_and_queries_are_fixed_by_the_seed() -> None:
    body = (targets.CORPUS / "publish" / "array.json").read_bytes()

    def sample(seed: int) -> list[object]:
        rng = random.Random(seed)
        return [mutate.mutate(rng, body, [body]) for _ in range(20)] + [
            mutate.hostile_query(rng) for _ in range(20)
        ]

    assert sample(5) == sample(5)
    assert sample(5) != sample(6)


@pytest.mark.slow
def test_a_short_coverage_guided_run_of_every_decoder(tmp_path: Path) -> None:
    """atheris with a fixed seed and input count: deterministic, a few seconds per decoder."""
    command = ["-m", "fuzz.decoders", "--runs=30000", "--seed=1", f"--artifacts={tmp_path}"]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in targets.names():
        line = re.search(rf"^{name}: ([\d,]+) inputs .* (\d+) crashes", done.stdout, re.M)
        assert line, done.stdout
        assert int(line.group(1).replace(",", "")) >= 30000
        assert line.group(2) == "0"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_short_campaign_against_a_real_server(tmp_path: Path) -> None:
    report = run(seed=1, requests=600, seconds=None, artifacts=tmp_path, check_every=100)
    assert report.failures == [], "\n".join(report.lines())
    assert report.requests == 600 and report.exit_code == 0
    assert set(report.sent) >= {"valid", "damaged", "resend", "wrong-headers", "get"}
    assert {200, 204, 400, 413, 415, 422} <= set(report.statuses)
    assert {t.route for t in targets.judged()} == set(report.posts), report.posts
    assert [t.name for t in targets.judged()] == targets.names()  # every door is judged
    received, unique, duplicates, _ = report.stats
    assert received == unique + duplicates and unique > 0 and duplicates > 0


def test_the_reliability_doc_says_how_to_add_a_decoder_and_what_the_runs_found() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text[text.index("## Fuzzing") : text.index("## Fault isolation")]
    assert "**Adding a decoder**" in section and "fuzz/targets.py" in section
    for command in ("python -m fuzz.decoders", "python -m fuzz.server", "make fuzz"):
        assert command in text
