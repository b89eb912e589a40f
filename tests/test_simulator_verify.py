"""Verification fails loudly when the aggregator's counts are wrong."""

from __future__ import annotations

import io
import json

import pytest
import trio
from rich.console import Console

from simulator.__main__ import run
from simulator.config import load_options
from simulator.verify import Expectation, StatsSnapshot, verify
from tests.simulator_fakes import FakeAggregator

EXACT = Expectation(
    distinct_keys=80, acked_events=100, ambiguous_events=0, abandoned_events=0, stored_acked=80
)


def failed(checks: list) -> list[str]:  # type: ignore[type-arg]
    return [c.name for c in checks if not c.ok]


def test_exact_counts_pass() -> None:
    before = StatsSnapshot(10, 7, 3)
    assert failed(verify(before, StatsSnapshot(110, 87, 23), EXACT)) == []


@pytest.mark.parametrize(
    ("after", "broken"),
    [
        (StatsSnapshot(110, 86, 24), "unique_processed grew by the distinct keys sent"),
        (StatsSnapshot(109, 87, 22), "received grew by every event sent, re-sends included"),
        (StatsSnapshot(110, 87, 22), "invariant after: received = unique_processed + "
                                     "duplicate_dropped"),
    ],
)  # fmt: skip
def test_wrong_counts_fail(after: StatsSnapshot, broken: str) -> None:
    assert broken in failed(verify(StatsSnapshot(10, 7, 3), after, EXACT))


def test_ambiguous_attempts_widen_received_only() -> None:
    exp = Expectation(80, 100, ambiguous_events=30, abandoned_events=0, stored_acked=60)
    before = StatsSnapshot(0, 0, 0)
    assert failed(verify(before, StatsSnapshot(130, 80, 50), exp)) == []  # 30 counted twice
    assert failed(verify(before, StatsSnapshot(100, 80, 20), exp)) == []  # none committed
    too_many = verify(before, StatsSnapshot(131, 80, 51), exp)
    assert failed(too_many) == ["received grew by every event sent, re-sends included"]
    assert "unique_processed grew by the distinct keys sent" in failed(
        verify(before, StatsSnapshot(130, 81, 49), exp)
    )


def test_abandoned_batches_fail_the_run() -> None:
    exp = Expectation(80, 90, ambiguous_events=0, abandoned_events=10, stored_acked=75)
    assert failed(verify(StatsSnapshot(0, 0, 0), StatsSnapshot(90, 75, 15), exp)) == [
        "every batch acknowledged"
    ]


@pytest.mark.trio
@pytest.mark.parametrize(("miscount", "code"), [(0, 0), (1, 1)])
async def test_cli_exit_code_follows_the_checks(miscount: int, code: int) -> None:
    fake = FakeAggregator()
    fake.miscount = miscount  # /stats after the run reports that many unique events too many
    out = io.StringIO()
    options = load_options(["--preset", "uts", "--json", "--url", "http://fake"], environ={})
    with trio.fail_after(10):
        result = await run(
            options, 5, Console(file=out), Console(file=io.StringIO()), fake.transport()
        )
    report = json.loads(out.getvalue())
    assert result == code
    assert report["ok"] is (code == 0)
    assert report["distinct_keys"] == 4_000 and report["events_sent"] == 5_000
    assert fake.stats_reads == 2
