"""The dashboard in-process: ``app.run_test`` with the fake aggregator on ``MockTransport``.

The timer is set to an hour so it never fires; refreshes are driven by ``r`` or by awaiting
``app.refresh_now()``, then ``pilot.pause()`` lets the screen catch up.
"""

from __future__ import annotations

from textual.pilot import Pilot
from textual.widgets import Sparkline

from tests.tui.fake import FakeAggregator, run
from tui.app.app import DashboardApp
from tui.screens.help import HelpScreen
from tui.widgets.counters import Counters, RatePanel
from tui.widgets.status import ConnectionStatus
from tui.widgets.tail import EventTail
from tui.widgets.topics import TopicsPanel

SIZE = (120, 36)
NEVER = 3600.0


def make_app(fake: FakeAggregator, **kwargs: object) -> DashboardApp:
    return DashboardApp(http=fake.client(), interval=NEVER, **kwargs)  # type: ignore[arg-type]


async def started(pilot: Pilot[None]) -> None:
    """Wait for the refresh the app starts on mount."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def refreshed(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, DashboardApp)
    assert await app.refresh_now() is not None
    await pilot.pause()


def sample() -> FakeAggregator:
    fake = FakeAggregator(uptime=10.0)
    fake.publish("orders", 12, 3)
    fake.publish("auth.login", 30, 5)
    fake.publish("payment", 7)
    return fake


def test_counters_and_connection_render() -> None:
    async def scenario() -> None:
        app = make_app(sample())
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert app.dashboard.query_one(Counters).text.splitlines() == [
                "received 57",
                "unique 49",
                "duplicates 8",
                "duplicate ratio 14.0%",
            ]
            status = app.dashboard.query_one(ConnectionStatus).text
            assert "connected" in status
            assert "http://fake:8080" in status
            assert "uptime 10.0s" in status

    run(scenario())


def test_rates_come_from_successive_snapshots() -> None:
    fake = sample()

    async def scenario() -> None:
        app = make_app(fake)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            panel = app.dashboard.query_one(RatePanel)
            assert "waiting for a second snapshot" in panel.text
            fake.uptime += 2.0
            fake.publish("orders", 20, 4)
            await refreshed(pilot)
            assert panel.text == "received 12.0/s   stored 10.0/s"
            fake.uptime += 0.5
            fake.publish("orders", 50)
            await refreshed(pilot)
            assert panel.text == "received 100.0/s   stored 100.0/s"
            assert list(panel.query_one(Sparkline).data or []) == [12.0, 100.0]

    run(scenario())


def test_topic_table_sorts_and_filters() -> None:
    async def scenario() -> None:
        app = make_app(sample())
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            topics = app.dashboard.query_one(TopicsPanel)
            assert topics.shown == ["auth.login", "orders", "payment"]
            await pilot.press("s")  # by unique, largest first
            assert topics.shown == ["auth.login", "orders", "payment"]
            await pilot.press("s")  # by duplicates
            assert topics.shown == ["auth.login", "orders", "payment"]
            await pilot.press("s")  # by last seq
            assert topics.shown == ["payment", "auth.login", "orders"]
            topics.sort_by("last_seq")  # the same column again (a header click): reversed
            await pilot.pause()
            assert topics.shown == ["orders", "auth.login", "payment"]
            assert "last seq ▲" in str(topics.border_title)

            await pilot.press("slash", "o", "r", "q")  # "q" is typed, it does not quit
            assert topics.shown == []
            await pilot.press("backspace")
            assert topics.shown == ["orders"]
            await pilot.press("enter")  # keep the filter, back to the table
            assert topics.table.has_focus
            assert topics.shown == ["orders"]
            assert app.is_running
            await pilot.press("slash", "escape")  # clears it
            assert topics.shown == ["orders", "auth.login", "payment"]

    run(scenario())


def test_enter_on_a_topic_tails_it_and_a_goes_back_to_all() -> None:
    fake = sample()

    async def scenario() -> None:
        app = make_app(fake)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            tail = app.dashboard.query_one(EventTail)
            assert tail.seqs == list(range(1, 50))
            await pilot.press("down", "enter")  # the second row: orders
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert tail.topic == "orders"
            assert tail.seqs == list(range(1, 13))
            assert "tail · orders" in str(tail.border_title)
            fake.publish("payment", 1)
            fake.publish("orders", 1)
            await refreshed(pilot)
            assert tail.seqs[-1] == 51
            assert 50 not in tail.seqs
            await pilot.press("a")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert tail.topic is None
            assert tail.seqs == list(range(1, 52))

    run(scenario())


def test_tail_appends_keeps_its_size_and_pauses() -> None:
    fake = sample()

    async def scenario() -> None:
        app = make_app(fake, tail_size=20)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            tail = app.dashboard.query_one(EventTail)
            assert tail.seqs == list(range(30, 50))
            fake.publish("orders", 3)
            await refreshed(pilot)
            assert tail.seqs == list(range(33, 53))

            await pilot.press("p")
            assert "paused" in str(tail.border_title)
            fake.publish("orders", 2)
            fake.requests.clear()
            await refreshed(pilot)
            assert tail.seqs[-1] == 52
            assert "/events" not in fake.requests  # paused: the tail asks nothing

            await pilot.press("p")
            assert "paused" not in str(tail.border_title)
            await refreshed(pilot)
            assert tail.seqs[-3:] == [52, 53, 54]

    run(scenario())


def test_server_down_is_shown_and_recovers() -> None:
    fake = sample()

    async def scenario() -> None:
        app = make_app(fake)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            status = app.dashboard.query_one(ConnectionStatus)
            counters = app.dashboard.query_one(Counters)
            fake.down = True
            await refreshed(pilot)
            assert "unreachable" in status.text
            assert "Connection refused" in status.text
            assert "retrying in" in status.text
            assert counters.border_subtitle == "stale"
            assert "received 57" in counters.text  # the last known numbers stay

            fake.down = False
            fake.error_status = 500
            await refreshed(pilot)
            assert "error" in status.text
            assert "HTTP 500" in status.text
            topics = app.dashboard.query_one(TopicsPanel)
            assert "/topics: HTTP 500" in str(topics.border_subtitle)

            fake.error_status = None
            fake.unhealthy = "disk full"
            fake.publish("orders", 1)
            await pilot.press("r")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert "degraded" in status.text and "disk full" in status.text
            assert "received 58" in counters.text

            fake.unhealthy = None
            fake.failing = {"/events"}
            await refreshed(pilot)
            assert status.text.startswith("● connected")
            assert counters.border_subtitle == ""
            assert "HTTP 500" not in str(topics.border_subtitle)
            tail = app.dashboard.query_one(EventTail)
            assert "/events: HTTP 500 boom" in str(tail.border_subtitle)

            fake.failing = set()
            await refreshed(pilot)
            assert tail.border_subtitle == "p pause/resume · a all topics"
            assert tail.seqs[-1] == 50

    run(scenario())


def test_topics_without_get_topics_show_names_and_tail_seqs() -> None:
    fake = sample()
    fake.has_topics = False

    async def scenario() -> None:
        app = make_app(fake)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            topics = app.dashboard.query_one(TopicsPanel)
            assert topics.shown == ["auth.login", "orders", "payment"]
            assert "counts need GET /topics" in str(topics.border_subtitle)
            assert [row.last_seq for row in topics.rows] == [42, 12, 49]
            assert [row.unique for row in topics.rows] == [None, None, None]

    run(scenario())


def test_help_opens_and_closes() -> None:
    async def scenario() -> None:
        app = make_app(sample())
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            assert app.screen is app.dashboard

    run(scenario())
