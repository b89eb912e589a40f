"""The main screen: connection line, counters and rates, topics and the tail (side by side when
wide, one above the other when narrow), the keys."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Horizontal
from textual.screen import Screen
from textual.widgets import Footer

from tui.data.poller import Snapshot, State
from tui.widgets.counters import Counters, RatePanel
from tui.widgets.status import ConnectionStatus
from tui.widgets.tail import EventTail
from tui.widgets.topics import TopicsPanel


class DashboardScreen(Screen[None]):
    """The keys that act on this screen live here (the data behind them is the app's: its
    actions are named ``app.*``); the app keeps only ``q`` and ``?``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_filter", "Clear"),
        Binding("p", "app.toggle_pause", "Pause"),
        Binding("a", "app.tail_all", "All"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("r", "app.refresh_now", "Refresh"),
        Binding("f", "app.search", "Find"),
    ]
    # Topics beside the tail from WIDE columns on; narrower (down to 80), the tail goes under the
    # topics, full width, so that every column fits.
    WIDE = 140
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]  # noqa: RUF012 (Textual types it so)
    DEFAULT_CSS = """
    DashboardScreen #numbers { height: 6; }
    DashboardScreen #numbers > Counters { width: 36; }
    DashboardScreen #numbers > RatePanel { width: 1fr; }
    DashboardScreen #panels { height: 1fr; layout: vertical; }
    DashboardScreen #panels > * { height: 1fr; }
    DashboardScreen.-wide #panels { layout: horizontal; }
    DashboardScreen.-wide TopicsPanel { width: 53; }
    DashboardScreen.-wide EventTail { width: 1fr; }
    """

    def __init__(self, url: str, tail_size: int) -> None:
        super().__init__()
        self.url = url
        self.tail_size = tail_size

    def compose(self) -> ComposeResult:
        yield ConnectionStatus(self.url, id="status")
        with Horizontal(id="numbers"):
            yield Counters(id="counters")
            yield RatePanel(id="rates")
        with Container(id="panels"):
            yield TopicsPanel(id="topics")
            yield EventTail(self.tail_size, id="tail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(TopicsPanel).table.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        topics = self.query_one(TopicsPanel)
        if action == "clear_filter":  # offered only while there is a filter to clear
            return bool(topics.filter) or topics.typing
        if action == "filter":  # while typing, "/" is text
            return not topics.typing
        return True

    def action_filter(self) -> None:
        self.query_one(TopicsPanel).start_filter()

    def action_clear_filter(self) -> None:
        self.query_one(TopicsPanel).clear_filter()

    def action_sort(self) -> None:
        self.query_one(TopicsPanel).sort_next()

    def apply(self, snapshot: Snapshot) -> None:
        connection = snapshot.connection
        self.query_one(ConnectionStatus).show(connection)
        stale = connection.state in (State.UNREACHABLE, State.ERROR)
        self.query_one(Counters).show(snapshot.stats, stale=stale)
        self.query_one(RatePanel).show(snapshot.rates)
        topics = self.query_one(TopicsPanel)
        topics.show(
            snapshot.topics, exact=snapshot.topics_exact, error=snapshot.errors.get("topics")
        )
        tail = self.query_one(EventTail)
        tail.show_error(snapshot.errors.get("tail"))
        if snapshot.tail is not None:
            tail.show(snapshot.tail)
