"""The dashboard in-process: ``app.run_test`` with the fake aggregator on ``MockTransport``.

The timer is set to an hour so it never fires; refreshes are driven by ``r`` or by awaiting
``app.refresh_now()``, then ``pilot.pause()`` lets the screen catch up.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import Footer, Input, Sparkline

from tests.tui.fake import FakeAggregator, run
from tui.app.app import DashboardApp
from tui.screens.help import KEYS, HelpScreen
from tui.widgets.counters import Counters, RatePanel
from tui.widgets.status import ConnectionStatus
from tui.widgets.tail import EventTail
from tui.widgets.topics import TopicsPanel, TopicTable

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


def four_topics() -> FakeAggregator:
    """Four topics whose order by each column, either way, differs from every other such order
    and from the order the server lists them in (checked by ``test_s_steps_through_...``)."""
    fake = FakeAggregator(uptime=10.0)
    fake.publish("email", 30, 0)
    fake.publish("orders", 2, 9)
    fake.publish("auth.login", 11, 4)
    fake.publish("payment", 6, 2)
    fake.publish("payment", 1, 0)
    fake.publish("auth.login", 1, 0)
    return fake


LISTED = ["email", "orders", "auth.login", "payment"]  # as GET /topics lists them
BY = {  # (title, order): what `s` steps through from the start, "topic ▲"
    ("topic", "▼"): ["payment", "orders", "email", "auth.login"],
    ("unique", "▼"): ["email", "auth.login", "payment", "orders"],
    ("unique", "▲"): ["orders", "payment", "auth.login", "email"],
    ("dups", "▼"): ["orders", "auth.login", "payment", "email"],
    ("dups", "▲"): ["email", "payment", "auth.login", "orders"],
    ("last seq", "▼"): ["auth.login", "payment", "orders", "email"],
    ("last seq", "▲"): ["email", "orders", "payment", "auth.login"],
    ("topic", "▲"): ["auth.login", "email", "orders", "payment"],
}


def test_topic_table_shows_the_counts_of_get_topics() -> None:
    async def scenario() -> None:
        app = make_app(four_topics())
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert app.dashboard.query_one(TopicsPanel).cells == [
                ("auth.login", "12", "4", "51"),
                ("email", "30", "0", "30"),
                ("orders", "2", "9", "32"),
                ("payment", "7", "2", "50"),
            ]

    run(scenario())


def test_s_steps_through_every_column_both_ways() -> None:
    orders = [tuple(LISTED), *(tuple(order) for order in BY.values())]
    assert len(set(orders)) == len(orders)  # the data can tell every order apart

    async def scenario() -> None:
        app = make_app(four_topics())
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            topics = app.dashboard.query_one(TopicsPanel)
            assert topics.shown == BY[("topic", "▲")]
            for (header, arrow), expected in BY.items():
                await pilot.press("s")
                assert (topics.shown, str(topics.border_title)) == (
                    expected,
                    f"topics (4/4) by {header} {arrow}",
                )

    run(scenario())


def test_a_click_on_a_header_sorts_by_it_and_again_reverses() -> None:
    async def scenario() -> None:
        app = make_app(four_topics())
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            topics = app.dashboard.query_one(TopicsPanel)
            header = {"topic": 1, "unique": 21, "dups": 31, "last seq": 41}  # x of each label
            for label, arrow in [("dups", "▼"), ("dups", "▲"), ("last seq", "▼"), ("topic", "▲")]:
                assert await pilot.click(topics.table, offset=(header[label], 0))
                assert topics.shown == BY[(label, arrow)]
                assert str(topics.border_title).endswith(f"by {label} {arrow}")
            await pilot.click(topics.table, offset=(header["topic"], 0))
            assert topics.shown == BY[("topic", "▼")]

    run(scenario())


def test_filter_enter_keeps_it_and_esc_clears_it() -> None:
    async def scenario() -> None:
        app = make_app(sample())
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            topics = app.dashboard.query_one(TopicsPanel)
            assert topics.shown == ["auth.login", "orders", "payment"]
            await pilot.press("slash", "o", "r", "q")  # "q" is typed, it does not quit
            assert topics.typing and topics.shown == []
            assert str(topics.border_title).startswith("topics (0/3)")
            await pilot.press("backspace")
            assert topics.shown == ["orders"]
            await pilot.press("enter")  # keep the filter, back to the table
            assert topics.table.has_focus and not topics.typing
            assert topics.shown == ["orders"]
            assert topics.border_subtitle == "filter: or"
            assert app.is_running
            await pilot.press("escape")  # clears it, from the table
            assert topics.shown == ["auth.login", "orders", "payment"]
            assert topics.border_subtitle == ""

            await pilot.press("slash", "a", "u", "escape")  # and while typing
            assert not topics.typing and topics.table.has_focus
            assert topics.shown == ["auth.login", "orders", "payment"]
            await pilot.press("slash")  # opens empty
            assert app.dashboard.query_one(Input).value == ""

    run(scenario())


def test_esc_is_offered_only_while_there_is_a_filter() -> None:
    async def scenario() -> None:
        app = make_app(sample())
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)

            def keys() -> list[str]:
                active = app.screen.active_bindings.values()
                return [b.binding.key for b in active if b.binding.show and b.enabled]

            assert "escape" not in keys()
            await pilot.press("slash", "o")
            assert "escape" in keys()
            await pilot.press("enter")
            assert "escape" in keys()
            await pilot.press("escape")
            assert "escape" not in keys()

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


# The help's key names as Textual names the keys.
KEY_NAMES = {"enter": "enter", "esc": "escape", "/": "slash", "?": "question_mark"}


def test_at_80x24_the_footer_offers_every_key_of_the_help_and_every_column_fits() -> None:
    fake = sample()
    fake.publish("a.very.long.topic.name.indeed", 2, payload=lambda seq: {"text": "x" * 200})

    async def scenario() -> None:
        app = make_app(fake)
        async with app.run_test(size=(80, 24)) as pilot:
            await started(pilot)
            await pilot.press("slash", "o", "enter")  # a filter, so that esc is offered too
            footer = app.dashboard.query_one(Footer)
            await pilot.pause()
            shown = footer.query("FooterKey")
            assert all(key.region.right <= 80 for key in shown)
            assert [key.key for key in shown] == [
                "enter",
                "escape",
                "p",
                "a",
                "slash",
                "s",
                "r",
                "f",
                "q",
                "question_mark",
            ]
            assert sorted(key.key for key in shown) == sorted(
                KEY_NAMES.get(key, key) for key, _ in KEYS
            )
            for table in (app.dashboard.query_one(TopicTable), app.dashboard.query_one(EventTail)):
                room = table.scrollable_content_region.width
                used = sum(column.get_render_width(table) for column in table.ordered_columns)
                assert used <= room, type(table).__name__

    run(scenario())


def test_the_help_names_exactly_the_keys_bound_on_the_dashboard() -> None:
    """The help's keys are exactly those bound on the dashboard (and the help's own)."""

    async def scenario() -> None:
        app = make_app(sample())
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("slash", "o", "enter")
            active = app.screen.active_bindings.values()
            bound = {b.binding.key for b in active if b.binding.show}
            assert bound == {KEY_NAMES.get(key, key) for key, _ in KEYS}
            help_keys = {
                key
                for b in HelpScreen.BINDINGS
                if isinstance(b, Binding)
                for key in b.key.split(",")
            }
            assert help_keys == {"escape", "question_mark", "q"}  # "esc, ? or q closes it"

    run(scenario())


def test_a_filter_holding_markup_is_shown_as_typed() -> None:
    async def scenario() -> None:
        app = make_app(sample())
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            topics = app.dashboard.query_one(TopicsPanel)
            typed = ["left_square_bracket", *"link", "equals_sign", *"x", "colon", "slash"]
            await pilot.press("slash", *typed, "right_square_bracket", "enter")
            assert topics.border_subtitle is not None
            assert topics._border_subtitle is not None  # what is drawn: the text as typed
            assert topics._border_subtitle.plain == "filter: [link=x:/]"
            assert app.is_running

    run(scenario())
