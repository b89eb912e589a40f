"""The search screen (``f``), driven with the pilot against the fake aggregator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from textual.binding import Binding
from textual.widgets import DataTable, Input, Static

from tests.support import ROOT
from tests.tui.fake import FakeAggregator, run
from tests.tui.test_app import KEY_NAMES, SIZE, make_app, started
from tui.screens.search import KEYS as SEARCH_KEYS
from tui.screens.search import SearchScreen
from tui.widgets.tail import EventTail

NOW = datetime(2026, 11, 21, 10, 30, tzinfo=UTC)


def logs() -> FakeAggregator:
    fake = FakeAggregator()
    fake.publish("auth", 3, source="auth-service", payload=lambda n: {"msg": f"login ok {n}"})
    fake.publish(
        "auth", 250, source="auth-service", payload=lambda n: {"msg": f"login failed u{n}"}
    )
    fake.publish("pay", 4, source="pay-service", payload=lambda n: {"msg": f"payment failed {n}"})
    return fake


def detail(screen: SearchScreen) -> Any:
    return json.loads(str(screen.query_one("#detail", Static).render()))


def test_f_opens_search_newest_first_with_the_selected_event_whole() -> None:
    fake = logs()

    async def scenario() -> None:
        app = make_app(fake, now=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("f")
            screen = app.screen
            assert isinstance(screen, SearchScreen)
            await pilot.press(*"failed", "tab", *"pay-service", "enter")
            await pilot.pause()
            assert fake.searches[-1] == {
                "q": "failed", "source": "pay-service", "order": "desc", "limit": "100"
            }  # fmt: skip
            assert [e.seq for e in screen.events] == [257, 256, 255, 254]
            assert screen.message == "4 events · any time"
            assert detail(screen)["payload"] == {"msg": "payment failed 257"}
            await pilot.press("down")  # the results have the focus: moving shows the next
            await pilot.pause()
            assert detail(screen)["seq"] == 256
            await pilot.press("escape")
            assert app.screen is app.dashboard

    run(scenario())


def test_results_are_paged_as_the_cursor_nears_the_end() -> None:
    fake = logs()

    async def scenario() -> None:
        app = make_app(fake, now=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("f", *"login failed", "enter")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, SearchScreen)
            assert len(screen.events) == 100 and screen.message.endswith("more below")
            table = screen.query_one("#results", DataTable)
            table.move_cursor(row=96)
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert len(screen.events) == 200
            assert fake.searches[-1]["before"] == str(screen.events[99].seq)
            table.move_cursor(row=199)
            await pilot.pause()
            await pilot.pause()
            assert len(screen.events) == 250 and "more below" not in screen.message
            assert [e.seq for e in screen.events] == list(range(253, 3, -1))

    run(scenario())


def test_a_bad_query_shows_the_servers_message_and_ranges_send_since() -> None:
    fake = logs()

    async def scenario() -> None:
        app = make_app(fake, now=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("f", *'"open', "enter")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, SearchScreen)
            assert "HTTP 422" in screen.message and "unclosed" in screen.message
            assert screen.query_one("#message").has_class("-error")
            screen.query_one("#q", Input).value = "ok"
            await pilot.press("ctrl+r", "ctrl+r")  # any time → last 5 min → last 15 min
            await pilot.pause()
            assert screen.range_name == "last 15 min"
            assert fake.searches[-1]["since"] == "2026-11-21T10:15:00.000000Z"
            assert not screen.query_one("#message").has_class("-error")

    run(scenario())


def test_ctrl_t_filters_the_live_tail_with_the_query() -> None:
    fake = logs()

    async def scenario() -> None:
        app = make_app(fake, now=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("f", *"payment", "enter", "ctrl+t")
            assert app.screen is app.dashboard
            assert app.tail.filters == {"q": "payment"}
            await app.refresh_now()
            await pilot.pause()
            tail = app.dashboard.query_one(EventTail)
            assert tail.seqs == [254, 255, 256, 257]  # the newest matches, oldest at the top
            assert "q payment" in str(tail.border_title)
            await pilot.press("a")  # all topics, no filter
            assert app.tail.filters == {} and "q payment" not in str(tail.border_title)

    run(scenario())


def test_the_search_keys_are_documented_word_for_word() -> None:
    page = (ROOT / "docs" / "dashboard.md").read_text()
    section = page.split("## The search screen", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    documented = [(key.strip("`"), does) for key, does in cells]
    assert documented == list(SEARCH_KEYS)
    bound = {b.key for b in SearchScreen.BINDINGS if isinstance(b, Binding)}
    assert bound == {"escape", "ctrl+r", "ctrl+t"} <= {KEY_NAMES.get(k, k) for k, _ in SEARCH_KEYS}


def test_markup_in_a_tail_filter_is_shown_literally() -> None:
    fake = logs()
    hostile = "[link=http://x]payment [bold]"

    async def scenario() -> None:
        app = make_app(fake, now=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("f")
            app.screen.query_one("#source", Input).value = "[b]pay-service[/b]"
            app.screen.query_one("#q", Input).value = hostile
            await pilot.press("enter", "ctrl+t")
            await app.refresh_now()
            await pilot.pause()
            tail = app.dashboard.query_one(EventTail)
            title = tail._border_title  # what is drawn: the text, markup not interpreted
            assert title is not None
            assert f"q {hostile}" in title.plain and "source [b]pay-service[/b]" in title.plain

    run(scenario())
