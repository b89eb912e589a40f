"""The generator: same seed ⇒ same events; exact distinct keys; re-sends of every kind."""

from __future__ import annotations

import json
import uuid

import pytest

from simulator.generator import KINDS, Batch, Generator, distinct_keys


def make(seed: int = 1, **overrides: object) -> Generator:
    settings: dict[str, object] = {
        "seed": seed,
        "total": 2_000,
        "batch": 50,
        "clients": 4,
        "dup_ratio": 0.3,
        "topics": 3,
        "id_style": "uuid4",
        "payload_bytes": 64,
    }
    settings.update(overrides)
    return Generator(**settings)  # type: ignore[arg-type]


def all_batches(gen: Generator) -> list[Batch]:
    return [b for c in range(gen.clients) for b in gen.batches_for(c)]


def decoded_keys(batch: Batch) -> list[tuple[str, str]]:
    body = json.loads(batch.body)
    events = body if isinstance(body, list) else [body]
    return [(e["topic"], e["event_id"]) for e in events]


def test_same_seed_same_events_other_seed_other_events() -> None:
    first = [b.body for b in all_batches(make(seed=7))]
    again = [b.body for b in all_batches(make(seed=7))]
    other = [b.body for b in all_batches(make(seed=8))]
    assert first == again
    assert not set(first) & set(other)


@pytest.mark.parametrize(
    ("total", "batch", "clients", "ratio"),
    [(5_000, 100, 8, 0.2), (20_000, 100, 8, 0.3), (1_003, 7, 3, 0.37), (500, 1, 5, 0.5),
     (300, 300, 1, 0.9), (100, 10, 2, 0.0)],
)  # fmt: skip
def test_distinct_keys_are_exact(total: int, batch: int, clients: int, ratio: float) -> None:
    gen = make(total=total, batch=batch, clients=clients, dup_ratio=ratio)
    batches = all_batches(gen)
    assert sum(b.size for b in batches) == total
    assert gen.distinct_total == total - int(total * ratio)
    assert distinct_keys(b.key_ids for b in batches) == gen.distinct_total
    assert sum(b.resends for b in batches) == int(total * ratio)
    # The identities on the wire: exactly as many distinct (topic, event_id) as the count says.
    wire = {key for b in batches for key in decoded_keys(b)}
    assert len(wire) == gen.distinct_total


def test_a_resend_is_the_same_bytes() -> None:
    gen = make()
    events: dict[tuple[str, str], str] = {}
    for b in all_batches(gen):
        for event in json.loads(b.body):
            key = (event["topic"], event["event_id"])
            assert events.setdefault(key, json.dumps(event)) == json.dumps(event)


def test_resends_inside_one_batch_and_across_clients() -> None:
    gen = make(clients=4)
    batches = all_batches(gen)
    assert any(len(set(b.key_ids)) < b.size for b in batches)  # inside one request
    clients_of: dict[int, set[int]] = {}
    for b in batches:
        for key in b.key_ids:
            clients_of.setdefault(key, set()).add(b.client)
    assert sum(len(c) > 1 for c in clients_of.values()) > 50  # sent by two different clients
    kinds = {k: sum(getattr(b, k) for b in batches) for k in KINDS}
    assert all(n > 0 for n in kinds.values()), kinds


def test_batches_belong_to_clients_round_robin() -> None:
    gen = make(clients=3)
    assert [b.index for b in gen.batches_for(1)][:3] == [1, 4, 7]
    assert {b.client for b in gen.batches_for(2)} == {2}


@pytest.mark.parametrize(("style", "version"), [("uuid4", 4), ("uuid7", 7)])
def test_uuid_styles(style: str, version: int) -> None:
    gen = make(id_style=style)
    ids = [gen.event_id(k) for k in range(200)]
    assert {uuid.UUID(i).version for i in ids} == {version}
    if style == "uuid7":
        assert ids == sorted(ids)  # time-ordered
    else:
        assert ids != sorted(ids)


def test_seq_style_and_single_event_bodies() -> None:
    gen = make(id_style="seq", batch=1, total=10)
    body = json.loads(gen.batch(0).body)  # type: ignore[union-attr]
    assert isinstance(body, dict)  # batch 1 sends a bare event object
    assert body["event_id"].endswith("-000000000000")
    assert gen.batch(10) is None


def test_ndjson_and_gzip_bodies() -> None:
    import gzip

    plain = make(fmt="ndjson").batch(0)
    packed = make(fmt="ndjson", gzip_body=True).batch(0)
    assert plain is not None and packed is not None
    assert gzip.decompress(packed.body) == plain.body
    lines = plain.body.decode().splitlines()
    assert len(lines) == plain.size and all(json.loads(line)["topic"] for line in lines)
