"""The dashboard application: a timer, the poller, the screen, the keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import ClassVar

import httpx
from textual.app import App
from textual.binding import Binding, BindingType

from tui.data.client import AggregatorClient, open_http
from tui.data.poller import Poller, Snapshot
from tui.data.subscribe import SubscribeTail
from tui.screens.dashboard import DashboardScreen
from tui.screens.help import HelpScreen
from tui.screens.search import SearchScreen
from tui.widgets.tail import EventTail
from tui.widgets.topics import TopicsPanel

REQUEST_TIMEOUT = 5.0


class DashboardApp(App[None]):
    """Watches one aggregator.

    ``http`` is injectable (tests pass an ``httpx.AsyncClient`` on a ``MockTransport``); without
    one the app opens its own on ``url`` (sending ``token`` as a bearer token, if any) and closes
    it on exit. Every ``interval`` seconds the timer asks for a refresh (one request per panel)
    unless one is still out or the backoff after a failure says wait; ``r`` and ``refresh_now``
    refresh at once. The tail follows ``GET /subscribe`` (``/events`` on an older server).
    ``clock`` and ``sleep`` are the backoffs' (tests pass their own).
    """

    TITLE = "aggregator"
    # No ctrl+p palette: its commands (themes, screenshots) are not the dashboard's, and at 80
    # columns its footer entry pushed the dashboard's own keys out.
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        http: httpx.AsyncClient | None = None,
        interval: float = 1.0,
        tail_size: int = 100,
        token: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__()
        self._owns_http = http is None
        self.http = http or open_http(url, token=token, timeout=REQUEST_TIMEOUT)
        self.client = AggregatorClient(self.http)
        self.interval = interval
        self.tail = SubscribeTail(self.client, tail_size, clock=clock, sleep=sleep)
        self.poller = Poller(self.client, interval=interval, clock=clock, tail=self.tail)
        self.dashboard = DashboardScreen(self.client.url, tail_size)
        self.last: Snapshot | None = None
        self.now = now  # the wall clock of the search screen's time ranges

    def get_default_screen(self) -> DashboardScreen:
        return self.dashboard

    def on_mount(self) -> None:
        self.set_interval(self.interval, self._tick)
        self._tick()

    async def on_unmount(self) -> None:
        await self.poller.tail.aclose()
        if self._owns_http:
            await self.http.aclose()

    def _tick(self) -> None:
        if self.poller.due():
            self.run_worker(self.refresh_now(), group="refresh")

    async def refresh_now(self) -> Snapshot | None:
        """One refresh of every panel; ``None`` when one was already out."""
        snapshot = await self.poller.refresh()
        if snapshot is not None:
            self.last = snapshot
            self.dashboard.apply(snapshot)
        return snapshot

    def action_refresh_now(self) -> None:
        self.run_worker(self.refresh_now(), group="refresh")

    def action_toggle_pause(self) -> None:
        self.poller.paused = not self.poller.paused
        self.dashboard.query_one(EventTail).set_paused(self.poller.paused)

    def action_tail_all(self) -> None:
        self.tail.filters = {}  # select() in tail_topic starts the tail over
        self.tail_topic(None)

    def action_search(self) -> None:
        if not isinstance(self.screen, SearchScreen):
            self.push_screen(SearchScreen(self.client, now=self.now, on_tail=self.tail_filtered))

    def tail_filtered(self, filters: dict[str, str]) -> None:
        """Follow only what ``filters`` (``q``, ``source``) admit, on the current topic."""
        self.tail.filter(filters)
        self.dashboard.query_one(EventTail).follow_filtered(self.tail.topic, filters)
        self.action_refresh_now()

    def tail_topic(self, topic: str | None) -> None:
        self.poller.tail.select(topic)
        self.dashboard.query_one(EventTail).follow(topic)
        self.action_refresh_now()

    def on_topics_panel_chosen(self, message: TopicsPanel.Chosen) -> None:
        self.tail_topic(message.topic)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())
