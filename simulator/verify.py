"""Checks the aggregator's ``/stats`` deltas against what this run sent.

The accounting, per batch (a batch is one request body, re-sent unchanged on every retry):

- The store counts a request in ``received`` once per *commit*. A 200 is one commit. An attempt
  answered 429 or 503 committed nothing. An *ambiguous* attempt (timeout after writing, dropped
  connection, another 5xx) may have committed: if it did, its events were counted, and the retry
  that then got 200 counted them again (all as duplicates).
  So ``acked_events ≤ Δreceived ≤ acked_events + ambiguous_events``; with no ambiguous attempt
  it is exact: ``Δreceived = acked_events``, which is every event sent, re-sends included.
- Every distinct key of an acknowledged batch is stored exactly once, whichever attempt or
  client got there first: ``Δunique_processed = distinct_keys`` (the run's keys are new: the seed
  salts every id, so a re-run with the same seed on the same store fails here, as it should).
- The 200 answers' ``stored`` sum to ``distinct_keys`` minus whatever an ambiguous attempt stored
  first: ``distinct_keys − ambiguous_events ≤ Σstored ≤ distinct_keys``.
- ``received = unique_processed + duplicate_dropped`` before and after.

If a batch was abandoned (retries exhausted, or a 4xx), its keys may or may not be stored; the
run fails, and the checks use bounds that hold either way.
This assumes nobody else publishes to the aggregator during the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import msgspec

from simulator.client import REFUSED, Refused, response_message


class StatsSnapshot(msgspec.Struct, frozen=True):
    received: int
    unique_processed: int
    duplicate_dropped: int


_STATS = msgspec.json.Decoder(StatsSnapshot)


async def fetch_stats(http: httpx.AsyncClient) -> StatsSnapshot:
    response = await http.get("/stats")
    if response.status_code in REFUSED:
        raise Refused("/stats", response.status_code, response_message(response))
    response.raise_for_status()
    return _STATS.decode(response.content)


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the run did, as the deltas must reflect it."""

    distinct_keys: int
    acked_events: int
    ambiguous_events: int
    abandoned_events: int
    stored_acked: int  # Σ stored over the 200 answers
    bad_acks: int = 0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    expected: str
    actual: str


def _range(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}..{high}"


def verify(before: StatsSnapshot, after: StatsSnapshot, exp: Expectation) -> list[Check]:
    d_received = after.received - before.received
    d_unique = after.unique_processed - before.unique_processed
    checks = []
    for label, s in (("before", before), ("after", after)):
        total = s.unique_processed + s.duplicate_dropped
        checks.append(
            Check(
                f"invariant {label}: received = unique_processed + duplicate_dropped",
                s.received == total,
                str(total),
                str(s.received),
            )
        )
    # An abandoned batch may have committed in full or not at all: its events widen the bounds.
    unique_low = exp.distinct_keys if not exp.abandoned_events else 0
    checks.append(
        Check(
            "unique_processed grew by the distinct keys sent",
            unique_low <= d_unique <= exp.distinct_keys,
            _range(unique_low, exp.distinct_keys),
            str(d_unique),
        )
    )
    received_high = exp.acked_events + exp.ambiguous_events + exp.abandoned_events
    checks.append(
        Check(
            "received grew by every event sent, re-sends included",
            exp.acked_events <= d_received <= received_high,
            _range(exp.acked_events, received_high),
            str(d_received),
        )
    )
    stored_low = max(exp.distinct_keys - exp.ambiguous_events - exp.abandoned_events, 0)
    checks.append(
        Check(
            "the 200 answers stored each distinct key once",
            stored_low <= exp.stored_acked <= exp.distinct_keys,
            _range(stored_low, exp.distinct_keys),
            str(exp.stored_acked),
        )
    )
    checks.append(
        Check("every batch acknowledged", exp.abandoned_events == 0, "0", str(exp.abandoned_events))
    )
    checks.append(
        Check("every acknowledgement counted its batch", exp.bad_acks == 0, "0", str(exp.bad_acks))
    )
    return checks
