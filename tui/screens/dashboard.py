"""The main screen: connection line, counters and rates, topics beside the tail, the keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer

from tui.data.poller import Snapshot, State
from tui.widgets.counters import Counters, RatePanel
from tui.widgets.status import ConnectionStatus
from tui.widgets.tail import EventTail
from tui.widgets.topics import TopicsPanel


class DashboardScreen(Screen[None]):
    DEFAULT_CSS = """
    DashboardScreen #numbers { height: 6; }
    DashboardScreen #numbers > Counters { width: 36; }
    DashboardScreen #numbers > RatePanel { width: 1fr; }
    DashboardScreen #panels { height: 1fr; }
    DashboardScreen TopicsPanel { width: 53; max-width: 50%; }
    DashboardScreen EventTail { width: 1fr; }
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
        with Horizontal(id="panels"):
            yield TopicsPanel(id="topics")
            yield EventTail(self.tail_size, id="tail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TopicsPanel).table.focus()

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
