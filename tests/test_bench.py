"""The benchmark's arithmetic: medians over rounds, ratios taken within each round."""

from __future__ import annotations

from simulator.bench import Row, markdown, median_rows, ratios


def round_of(raw_u4: float, server_u4: float, bare: float, single: float, note: str) -> list[Row]:
    return [
        Row("bare hypercorn-trio", "uuid4", 1, bare, None, bare, 20.0, 40.0, 32.0),
        Row("aggregator (FULL)", "uuid4", 1, single, single * 0.8, single, 30.0, 60.0, 50.0, note),
        Row("store commit (no HTTP)", "uuid4", 2000, raw_u4 * 1.25, raw_u4, 0, None, None, None),
        Row(
            "aggregator (FULL)",
            "uuid4",
            100,
            server_u4 * 1.25,
            server_u4,
            400,
            100.0,
            200.0,
            140.0,
            note,
        ),
    ]


def test_ratios_are_taken_within_each_round_then_the_median() -> None:
    # Round 2 ran on a slower machine: its absolute figures are lower, its ratios are not.
    rounds = [
        round_of(60_000, 30_000, 2_000, 1_000, "verified"),
        round_of(30_000, 18_000, 1_000, 700, "verified"),
        round_of(50_000, 20_000, 1_800, 1_080, "verified"),
    ]
    assert ratios(rounds) == [
        "- server ÷ store commit, uuid4, batch 100, unique events/s: 50% (rounds: 50%, 60%, 40%) "
        "(target ≥ 60%)",
        "- single-event server ÷ bare hypercorn-trio, uuid4, req/s: 60% (rounds: 50%, 70%, 60%) "
        "(target ≥ 85%)",
    ]


def test_median_rows_take_each_field_and_keep_a_failed_verification() -> None:
    rounds = [
        round_of(60_000, 30_000, 2_000, 1_000, "verified"),
        round_of(30_000, 18_000, 1_000, 700, "FAILED: unique_processed"),
        round_of(50_000, 20_000, 1_800, 1_080, "verified"),
    ]
    bare, single, raw, server = median_rows(rounds)
    assert (bare.requests, single.requests, raw.committed, server.committed) == (
        1_800,
        1_000,
        50_000,
        20_000,
    )
    assert raw.p50_ms is None and server.p99_ms == 200.0
    assert bare.note == "" and single.note == "FAILED: unique_processed; verified"
    table = markdown(rounds, 8, 50)
    assert "medians of 3 rounds" in table
    assert "| aggregator (FULL) | uuid4 | 100 | 25,000 | 20,000 |" in table


def test_one_round_prints_no_spread() -> None:
    rounds = [round_of(60_000, 30_000, 2_000, 1_000, "verified")]
    assert ratios(rounds)[0].endswith(": 50% (target ≥ 60%)")
    assert "one round" in markdown(rounds, 8, 50)
