"""The search screen (``f`` on the dashboard): stored events by ``q``, source and time range,
newest first, the next page fetched as the cursor nears the end; the selected event shown whole.

The query goes to ``GET /events?order=desc`` as typed; the server parses it (docs/search.md)
and its refusals (a 422 naming what is wrong in ``q``, the 400 when search is off) are shown as
they come. ``ctrl+t`` filters the dashboard's live tail with the same ``q`` and source.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from tui.data.client import AggregatorClient, describe
from tui.data.models import Event
from tui.widgets import numbers

PAGE = 100
NEAR_END = 5  # rows from the end at which the next page is fetched
RANGES: tuple[tuple[str, float | None], ...] = (
    ("any time", None),
    ("last 5 min", 300),
    ("last 15 min", 900),
    ("last hour", 3600),
    ("last 24 h", 86400),
)
KEYS: tuple[tuple[str, str], ...] = (
    ("enter", "search (in the query or source box); on a result: show it whole"),
    ("tab", "next box: query, source, results"),
    ("ctrl+r", "time range: any time, last 5 min, 15 min, hour, 24 h in turn"),
    ("ctrl+t", "filter the dashboard's live tail with this query and source, and go back"),
    ("esc", "back to the dashboard"),
)


class SearchScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+r", "next_range", "Range"),
        Binding("ctrl+t", "tail_this", "Tail this"),
    ]
    DEFAULT_CSS = """
    SearchScreen #form { height: 3; }
    SearchScreen #q { width: 1fr; }
    SearchScreen #source { width: 26; }
    SearchScreen #range { width: 16; height: 3; content-align: center middle;
        border: round $primary; }
    SearchScreen #message { height: 1; padding: 0 1; color: $text-muted; }
    SearchScreen #message.-error { color: $error; }
    SearchScreen #body { height: 1fr; }
    SearchScreen #results { width: 3fr; border: round $primary; }
    SearchScreen #detail-box { width: 2fr; border: round $primary; }
    """

    def __init__(
        self,
        client: AggregatorClient,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_tail: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.now = now
        self.on_tail = on_tail
        self.range_index = 0
        self.events: list[Event] = []  # as shown, newest first
        self.before: int | None = None  # the next page's cursor; None: no more
        self.filters: dict[str, str] = {}  # of the search shown
        self.message = ""
        self._loading = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="form"):
            yield Input(placeholder='q: words "a phrase" prefix* -not a OR b', id="q")
            yield Input(placeholder="source (exact)", id="source")
            yield Static(RANGES[0][0], id="range")
        yield Static("type a query, enter searches", id="message")
        with Horizontal(id="body"):
            table: DataTable[str | Text] = DataTable(cursor_type="row", id="results")
            yield table
            with VerticalScroll(id="detail-box"):
                yield Static("", id="detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#results", DataTable)
        table.border_title = "results · newest first"
        for name, width in (("seq", 7), ("timestamp", 12), ("topic", 14), ("source", 14)):
            table.add_column(name, width=width, key=name)
        table.add_column("payload", key="payload")
        self.query_one("#detail-box").border_title = "event"
        self.query_one("#q", Input).focus()

    @property
    def range_name(self) -> str:
        return RANGES[self.range_index][0]

    def current_filters(self) -> dict[str, str]:
        filters = {}
        q = self.query_one("#q", Input).value.strip()
        source = self.query_one("#source", Input).value
        if q:
            filters["q"] = q
        if source:
            filters["source"] = source
        seconds = RANGES[self.range_index][1]
        if seconds is not None:
            since = self.now().astimezone(UTC) - timedelta(seconds=seconds)
            filters["since"] = since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return filters

    @on(Input.Submitted)
    async def search(self) -> None:
        """A new search: the first page of the filters as they are now."""
        self.filters = self.current_filters()
        self.events, self.before = [], None
        table = self.query_one("#results", DataTable)
        table.clear()
        await self._load(None)
        if self.events:
            table.focus()

    async def _load(self, before: int | None) -> None:
        self._loading = True
        try:
            page = await self.client.search(self.filters, before=before, limit=PAGE)
        except Exception as exc:  # the server's refusal or a failed request, shown as it is
            self._say(describe(exc), error=True)
            return
        finally:
            self._loading = False
        table = self.query_one("#results", DataTable)
        for event in page.events:
            self.events.append(event)
            table.add_row(*self._cells(event), key=str(event.seq))
        self.before = page.before
        more = " · more below" if self.before is not None else ""
        self._say(f"{len(self.events)} events · {self.range_name}{more}")
        if len(self.events) == len(page.events) and self.events:
            self._show(self.events[0])

    @on(DataTable.RowHighlighted, "#results")
    async def highlighted(self, message: DataTable.RowHighlighted) -> None:
        index = message.cursor_row
        if 0 <= index < len(self.events):
            self._show(self.events[index])
        near_end = index >= len(self.events) - NEAR_END
        if near_end and self.before is not None and not self._loading:
            await self._load(self.before)

    def _show(self, event: Event) -> None:
        whole = {
            "seq": event.seq,
            "topic": event.topic,
            "event_id": event.event_id,
            "timestamp": event.timestamp,
            "source": event.source,
            "received_at": event.received_at,
            "payload": json.loads(event.payload),
        }
        text = json.dumps(whole, indent=2, ensure_ascii=False)
        self.query_one("#detail", Static).update(Text(text))

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message = text
        message = self.query_one("#message", Static)
        message.update(Text(text))
        message.set_class(error, "-error")

    @staticmethod
    def _cells(event: Event) -> tuple[str | Text, ...]:
        def cut(text: str, style: str = "") -> Text:
            return Text(text, style, overflow="ellipsis", no_wrap=True)

        return (
            Text(str(event.seq), justify="right"),
            numbers.clock_time(event.timestamp),
            cut(event.topic, "bold"),
            cut(event.source),
            cut(event.payload[:400], "dim"),
        )

    async def action_next_range(self) -> None:
        self.range_index = (self.range_index + 1) % len(RANGES)
        self.query_one("#range", Static).update(self.range_name)
        if self.filters or self.events:
            await self.search()

    def action_tail_this(self) -> None:
        if self.on_tail is not None:
            filters = self.current_filters()
            filters.pop("since", None)  # a live tail has no time range: it follows what comes
            self.on_tail(filters)
        self.dismiss()

    def action_back(self) -> None:
        self.dismiss()
