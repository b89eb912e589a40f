"""The writer's upkeep: a step after each commit, more while the store has work and no request
waits, a step every ``idle_seconds`` with no traffic, and a full disk under a size limit met by
deleting the oldest events before the probe. Virtual time (pytest-trio's ``mock_clock``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from aggregator.actors.monitor import WriterMonitor
from aggregator.actors.upkeep import UpkeepPlan
from aggregator.actors.writer import run_writer
from aggregator.incidents import Incidents
from aggregator.messages import (
    Accepted,
    EventRecord,
    Internal,
    Unavailable,
    WriteOutcome,
    WriteRequest,
)
from aggregator.store import CommitResult, Retention, StoreUnavailable, Upkeep
from aggregator.store.base import commit_result
from aggregator.store.sqlite import SQLiteReader, SQLiteStore
from tests.test_retention import FakeClock

pytestmark = pytest.mark.trio


def rec(event_id: str) -> EventRecord:
    return EventRecord("t", event_id, "2026-11-21T10:00:00Z", "src", "{}")


class ScriptedStore:
    """A store whose ``maintain`` reports more work ``more`` times after the first commit; it
    logs every call with the virtual time, and sets ``reached`` once ``maintain`` was called
    ``until`` times."""

    def __init__(self, more: int, until: int, failures: int = 0) -> None:
        self.calls: list[tuple[str, float]] = []
        self.more = more
        self.until = until
        self.failures = failures  # commits that fail with a full disk first
        self.reached = trio.Event()
        self.probed = trio.Event()

    def _log(self, what: str) -> None:
        self.calls.append((what, trio.from_thread.run_sync(trio.current_time)))

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        self._log("commit")
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("database or disk is full")
        return commit_result([[True] * len(batch) for batch in batches])

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        self._log("reclaim" if reclaim else "maintain")
        if sum(1 for what, _ in self.calls if what == "maintain") >= self.until:
            trio.from_thread.run_sync(self.reached.set)
        if not any(what == "commit" for what, _ in self.calls):
            return Upkeep(0, more=False)
        self.more -= 1
        return Upkeep(1 if reclaim else 0, more=self.more >= 0)

    def probe(self, reserve_bytes: int) -> None:
        self._log("probe")
        trio.from_thread.run_sync(self.probed.set)

    def close(self) -> None:
        pass


async def request(inbox: trio.MemorySendChannel[WriteRequest], ids: list[str]) -> WriteOutcome:
    reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](1)
    await inbox.send(WriteRequest([rec(i) for i in ids], reply_send))
    return await reply_recv.receive()


@pytest.fixture
def virtual(mock_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    # Jump only after 0.5 s of real idleness, so that a store call on a worker thread finishes
    # first even on a loaded machine (a jump while one runs would go to the test's deadline).
    mock_clock.autojump_threshold = 0.5
    return mock_clock


async def test_a_step_after_each_commit_and_more_while_there_is_work(
    virtual: trio.testing.MockClock,
) -> None:
    store = ScriptedStore(more=2, until=4)
    send, recv = trio.open_memory_channel[WriteRequest](10)
    plan = UpkeepPlan(idle_seconds=100)
    monitor = WriterMonitor()
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, recv, store, monitor, max_txn_events=100)
            await nursery.start(partial(writer, upkeep=plan))
            assert isinstance(await request(send, ["a"]), Accepted)
            await store.reached.wait()
            await send.aclose()
    # The step at start-up (a store just opened may have work), then the commit, its step and
    # the two more it asked for, back to back: no idle wait between them.
    assert [what for what, _ in store.calls] == ["maintain", "commit", *["maintain"] * 3]
    assert {at for _, at in store.calls} == {0.0}
    stats = monitor.statistics()  # what /stats and /metrics show of it
    assert (stats.upkeep_steps, stats.upkeep_more, stats.expired) == (4, False, 0)


async def test_with_no_traffic_a_step_every_idle_seconds(virtual: trio.testing.MockClock) -> None:
    store = ScriptedStore(more=0, until=4)
    send, recv = trio.open_memory_channel[WriteRequest](10)
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, recv, store, WriterMonitor(), max_txn_events=100)
            await nursery.start(partial(writer, upkeep=UpkeepPlan(idle_seconds=3)))
            await store.reached.wait()
            await send.aclose()
    assert [at for _, at in store.calls] == [0.0, 3.0, 6.0, 9.0]


@pytest.mark.parametrize("limit", [1 << 30, 1, 0])  # 1 byte: a limit too
async def test_a_full_disk_under_a_size_limit_deletes_the_oldest_before_probing(
    virtual: trio.testing.MockClock, limit: int
) -> None:
    store = ScriptedStore(more=-10, until=10**9, failures=1)
    send, recv = trio.open_memory_channel[WriteRequest](10)
    plan = UpkeepPlan(retention=Retention(max_bytes=limit), idle_seconds=100)
    monitor = WriterMonitor()
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, recv, store, monitor, max_txn_events=100)
            await nursery.start(partial(writer, upkeep=plan, probe_seconds=2))
            assert isinstance(await request(send, ["a"]), Unavailable)
            await store.probed.wait()
            await send.aclose()
    kinds = [what for what, _ in store.calls]
    assert monitor.statistics().expired == (2 if limit else 0)  # one per reclaiming step
    # Room is made right after the failed commit and again before each probe. Without a size
    # limit the contract is "keep everything": no event is deleted to make room.
    assert kinds == ["maintain", "commit", *(["reclaim"] * 2 if limit else []), "probe"]


async def test_events_expire_with_the_writer_idle(
    virtual: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Retention by age on a real store: the wall clock is injected, the writer's idle steps run
    on virtual time; nothing is slept for real."""
    clock = FakeClock()
    database = tmp_path / "s.sqlite3"
    store = ExpiryWatched(database, clock=clock)
    send, recv = trio.open_memory_channel[WriteRequest](10)
    plan = UpkeepPlan(retention=Retention(max_age_seconds=60), idle_seconds=1)
    reader = SQLiteReader(database)
    # Two or three idle steps expire them; a bound of 20 virtual seconds (10 s real at most, the
    # clock jumping after 0.5 s of idleness) fails a broken step fast, within mutmut's timeout.
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, recv, store, WriterMonitor(), max_txn_events=100)
            await nursery.start(partial(writer, upkeep=plan))
            await request(send, ["old-1", "old-2"])
            clock.advance(30)
            await request(send, ["young"])
            clock.advance(45)  # the first two are 75 s old now, "young" 45 s
            await store.expired.wait()
            assert [e.event_id for e in reader.events(None, 0, 10, 0)] == ["young"]
            await send.aclose()
    store.close()


class ExpiryWatched(SQLiteStore):
    """The real store, telling the test when a step has deleted events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expired = trio.Event()

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        result = super().maintain(retention, max_events, reclaim=reclaim)
        if result.expired:
            trio.from_thread.run_sync(self.expired.set)
        return result


class ProbedStore(ScriptedStore):
    """A store whose first commit meets a full disk; its probes fail, or meet a bug, as
    scripted, then succeed. It keeps the size of each probe and the writer's health when each
    began."""

    def __init__(self, monitor: WriterMonitor, probes: list[BaseException]) -> None:
        super().__init__(more=-10, until=10**9, failures=1)
        self.monitor = monitor
        self.probes = probes
        self.sizes: list[int] = []
        self.health: list[str | None] = []
        self.recovered = trio.Event()

    def probe(self, reserve_bytes: int) -> None:
        self.sizes.append(reserve_bytes)
        self.health.append(self.monitor.statistics().last_error)
        if self.probes:
            raise self.probes.pop(0)
        trio.from_thread.run_sync(self.recovered.set)


async def test_failed_probes_keep_the_store_unhealthy_until_one_of_the_right_size_commits(
    virtual: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = WriterMonitor()
    bug = RuntimeError("a bug in the probe")
    store = ProbedStore(monitor, [StoreUnavailable("still full"), bug])
    recorded: list[str] = []
    send, recv = trio.open_memory_channel[WriteRequest](10)
    big = EventRecord("t", "big", "2026-11-21T10:00:00Z", "src", "x" * 100_000)
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, recv, store, monitor, max_txn_events=100, probe_seconds=2)
            await nursery.start(partial(writer, incidents=Incidents(recorded.append)))
            reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](1)
            await send.send(WriteRequest([big], reply_send))
            # A failure before COMMIT (the default of StoreUnavailable) stored nothing.
            assert await reply_recv.receive() == Unavailable("database or disk is full")
            await store.recovered.wait()
            assert isinstance(await request(send, ["a"]), Accepted)
            await send.aclose()
    # Twice the bytes of the transaction that failed, each time.
    assert store.sizes == [2 * sum(len(field) for field in big)] * 3
    # A failed probe leaves the store unhealthy with its own error; a bug in one as it was.
    assert store.health == ["database or disk is full", "still full", "still full"]
    assert monitor.statistics().last_error is None
    assert recorded == ["writer"]
    [logged] = [r for r in caplog.records if r.getMessage().startswith("internal error")]
    assert re.fullmatch(
        rf"internal error in writer \(request id [0-9a-f]{{12}}\) while probing the store with "
        rf"{store.sizes[0]} bytes",
        logged.getMessage(),
    )
    assert logged.exc_info is not None and logged.exc_info[1] is bug


class BuggyCommitStore(ScriptedStore):
    """A store whose first commit meets a bug (it has rolled back and takes writes)."""

    def commit(self, batches: Sequence[Sequence[EventRecord]]) -> CommitResult:
        self._log("commit")
        if sum(1 for what, _ in self.calls if what == "commit") == 1:
            raise RuntimeError("a bug")
        return commit_result([[True] * len(batch) for batch in batches])


async def test_a_bug_in_a_commit_is_not_an_outage_upkeep_follows_as_after_any_commit(
    virtual: trio.testing.MockClock,
) -> None:
    store = BuggyCommitStore(more=-10, until=2)
    send, recv = trio.open_memory_channel[WriteRequest](10)
    monitor = WriterMonitor()
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, recv, store, monitor, max_txn_events=100)
            await nursery.start(partial(writer, upkeep=UpkeepPlan(idle_seconds=100)))
            assert isinstance(await request(send, ["a"]), Internal)
            await store.reached.wait()
            await send.aclose()
    # The step right after the commit, not an idle wait later; and no probe.
    assert store.calls == [("maintain", 0.0), ("commit", 0.0), ("maintain", 0.0)]
    assert monitor.statistics().last_error is None


class BuggyMaintainStore(ScriptedStore):
    """A store whose first upkeep step after a commit meets a bug."""

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        result = super().maintain(retention, max_events, reclaim=reclaim)
        if [what for what, _ in self.calls][-2:] == ["commit", "maintain"]:
            raise RuntimeError("a bug in upkeep")
        return result


async def test_a_bug_in_an_upkeep_step_is_an_incident_and_the_writer_goes_on(
    virtual: trio.testing.MockClock,
) -> None:
    store = BuggyMaintainStore(more=-10, until=10**9)
    send, recv = trio.open_memory_channel[WriteRequest](10)
    recorded: list[str] = []
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, recv, store, WriterMonitor(), max_txn_events=100)
            await nursery.start(partial(writer, incidents=Incidents(recorded.append)))
            assert isinstance(await request(send, ["a"]), Accepted)
            assert isinstance(await request(send, ["b"]), Accepted)
            await send.aclose()
    assert recorded == ["writer", "writer"]  # after each commit, counted as the writer's


class AlwaysBuggyMaintainStore(ScriptedStore):
    """Every upkeep step meets a bug; the first commit meets a full disk."""

    def maintain(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:
        super().maintain(retention, max_events, reclaim=reclaim)
        raise RuntimeError("a bug in upkeep")


async def test_bugs_in_every_kind_of_upkeep_step_are_incidents_and_the_writer_goes_on(
    virtual: trio.testing.MockClock,
) -> None:
    """At start-up, reclaiming after a failed commit and before a probe, idle, after a commit."""
    store = AlwaysBuggyMaintainStore(more=-10, until=2, failures=1)
    send, recv = trio.open_memory_channel[WriteRequest](10)
    recorded: list[str] = []
    plan = UpkeepPlan(retention=Retention(max_bytes=1 << 30), idle_seconds=3)
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            writer = partial(run_writer, recv, store, WriterMonitor(), max_txn_events=100)
            incidents = Incidents(recorded.append)
            await nursery.start(partial(writer, upkeep=plan, probe_seconds=2, incidents=incidents))
            assert isinstance(await request(send, ["a"]), Unavailable)
            await store.probed.wait()
            await store.reached.wait()  # an idle step after the probe
            assert isinstance(await request(send, ["b"]), Accepted)
            await send.aclose()
    kinds = [what for what, _ in store.calls]
    assert kinds[:7] == ["maintain", "commit", "reclaim", "reclaim", "probe", "maintain", "commit"]
    steps = kinds.count("maintain") + kinds.count("reclaim")
    assert recorded == ["writer"] * steps and steps >= 5
