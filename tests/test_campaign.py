"""The crash campaign: a short run (5 SIGKILLs under load), and its checker catching violations."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

from aggregator.messages import EventRecord
from aggregator.store.base import Retention
from aggregator.store.sqlite import SQLiteStore
from simulator.campaign import Figures, Load, check
from tests.support import ROOT
from tests.test_retention import FakeClock


def test_five_kills_under_load_lose_nothing_and_double_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator.campaign", "--kills", "5", "--seed", "5",
         "--max-delay", "1.5", "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kills survived" in result.stdout
    assert "lost = 0, doubled = 0, never sent = 0" in result.stdout
    assert "topics: 0 disagree with the events table" in result.stdout
    assert "VIOLATION" not in result.stdout


def test_five_kills_with_retention_on_lose_nothing_that_had_not_expired(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator.campaign", "--kills", "5", "--seed", "6",
         "--max-delay", "2", "--data-dir", str(tmp_path), "--retention-bytes", "60000",
         "--min-events", "2000"],  # some expire, however slow the machine
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lost = 0, doubled = 0, never sent = 0" in result.stdout
    expired = re.search(r"retention: (\d+) events expired; (\d+) acknowledged keys", result.stdout)
    assert expired and int(expired[1]) > 0 and int(expired[2]) > 0, result.stdout
    assert "topics: 0 disagree with the events table" in result.stdout
    assert "VIOLATION" not in result.stdout


def test_the_checker_reports_a_lost_and_an_unknown_event(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    store.commit([[EventRecord("t", "stored-never-sent", "2026-11-21T10:00:00Z", "s", "{}")]])
    store.close()
    load = Load(random.Random(0))
    load.record([{"topic": "t", "event_id": "acked-never-stored"}])
    load.sent.add(("t", "acked-never-stored"))
    figures = check(tmp_path / "s.sqlite3", load, kills=0)
    assert (figures.lost, figures.doubled, figures.unknown) == (1, 0, 1)
    assert [p.split()[-1] for p in figures.violations()] == ["stored", "sent"]


def test_the_checker_reports_broken_counters() -> None:
    fine = Figures(1, 10, 5, 50, 50, 50, 60, 50, 10, 0, 0, 0, 0, 60)
    assert fine.violations() == []
    skewed = Figures(1, 10, 5, 50, 50, 50, 60, 49, 10, 0, 0, 0, 0, 60)
    assert skewed.violations() == [
        "received != unique_processed + duplicate_dropped",
        "unique_processed 49 - expired 0 != 50 rows",
    ]


def test_the_checker_reports_topics_that_disagree_with_the_events(tmp_path: Path) -> None:
    database = tmp_path / "s.sqlite3"
    store = SQLiteStore(database)
    record = EventRecord("t", "e", "2026-11-21T10:00:00Z", "s", "{}")
    store.commit([[record, record], [record._replace(topic="u")]])
    load = Load(random.Random(0))
    load.sent |= {("t", "e"), ("u", "e")}
    assert check(database, load, kills=0).violations() == []
    store.execute("UPDATE topics SET last_seq = last_seq + 1 WHERE topic = 'u'")
    store.execute("INSERT INTO topics VALUES ('v', 1, 0, 9, 0)")  # a topic with no events
    store.close()
    figures = check(database, load, kills=0)
    assert figures.violations() == [
        "2 topics disagree with the events table",
        "the topics count 4 events, not 3",
    ]


def test_with_retention_a_missing_key_sent_after_the_oldest_stored_is_lost(tmp_path: Path) -> None:
    database, clock = tmp_path / "s.sqlite3", FakeClock()
    store = SQLiteStore(database, clock=clock)
    store.commit([[EventRecord("t", "expired", "2026-11-21T10:00:00Z", "s", "{}")]])
    clock.advance(100)
    store.commit([[EventRecord("t", "kept", "2026-11-21T10:00:00Z", "s", "{}")]])
    assert store.maintain(Retention(max_age_seconds=50), 10).expired == 1
    store.close()
    start = clock.now.timestamp() - 100  # when the first was sent
    load = Load(random.Random(0))
    load.sent |= {("t", "expired"), ("t", "kept"), ("t", "vanished")}
    for event_id, first_sent in (
        ("expired", start),
        ("kept", start + 100),
        ("vanished", start + 101),
    ):
        batch = [{"topic": "t", "event_id": event_id}]
        load.sending(batch, first_sent)
        load.record(batch)
    # "expired" is re-sent after the oldest stored event and acknowledged (a duplicate while
    # its event was still stored): it was still first sent before, so it may have expired.
    load.sending([{"topic": "t", "event_id": "expired"}], start + 150)
    load.record([{"topic": "t", "event_id": "expired"}])
    figures = check(database, load, kills=0)
    # "expired" was first sent before the oldest stored event: it may have expired;
    # "vanished" was first sent after it was received, so retention cannot have deleted it.
    assert (figures.expired, figures.expired_keys, figures.lost) == (1, 1, 1)
    assert figures.violations() == [
        "1 acknowledged events are not stored",
        "received is less than the events acknowledged",
    ]
