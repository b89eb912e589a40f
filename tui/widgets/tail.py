"""The live tail: the newest events, oldest at the top, following the end."""

from __future__ import annotations

from collections import OrderedDict

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from tui.data.models import Event
from tui.data.tail import TailUpdate
from tui.widgets import numbers

COLUMNS = ("seq", "received", "topic", "event_id", "source", "payload")
# The widths of topic, event_id and source: as wanted, then as narrow as they go; the payload
# takes what is left, so no column runs past the border.
WANTED = {"topic": 16, "event_id": 14, "source": 15}
NARROW = {"topic": 12, "event_id": 10, "source": 10}
PAYLOAD_MIN = 12
PAYLOAD_CHARS = 400  # a payload is cut to this before it is laid out (it can be 64 KiB)
TIME_WIDTH = 12  # 10:00:01.123


def widths(room: int, seq_digits: int) -> dict[str, int]:
    """Column widths for ``room`` cells (each column also takes 2 cells of padding)."""
    fixed = {"seq": max(6, seq_digits), "received": TIME_WIDTH}
    left = room - 2 * len(COLUMNS) - sum(fixed.values())
    flexible = WANTED if left - sum(WANTED.values()) >= PAYLOAD_MIN else NARROW
    return {**fixed, **flexible, "payload": max(PAYLOAD_MIN, left - sum(flexible.values()))}


class EventTail(DataTable[str | Text]):
    DEFAULT_CSS = """
    EventTail { border: round $primary; height: 1fr; overflow-x: hidden; scrollbar-gutter: stable; }
    """

    def __init__(self, capacity: int = 100, *, id: str | None = None) -> None:
        super().__init__(cursor_type="none", zebra_stripes=True, id=id)
        self.capacity = capacity
        self.topic: str | None = None
        self.filters: dict[str, str] = {}  # the search filters of the tail, shown in its title
        self.paused = False
        self.error: str | None = None
        self._events: OrderedDict[int, Event] = OrderedDict()  # by seq, as shown
        self._widths: dict[str, int] = {}

    def on_mount(self) -> None:
        self._layout()
        self._title()

    def on_resize(self, event: events.Resize) -> None:
        self._layout()

    @property
    def seqs(self) -> list[int]:
        """The seq of each event shown, top to bottom."""
        return [int(str(row.key.value)) for row in self.ordered_rows]

    @property
    def column_widths(self) -> dict[str, int]:
        return dict(self._widths)

    def follow(self, topic: str | None) -> None:
        self.topic = topic
        self.filters = {}
        self._title()

    def follow_filtered(self, topic: str | None, filters: dict[str, str]) -> None:
        self.topic = topic
        self.filters = dict(filters)
        self._title()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._title()

    def show_error(self, error: str | None) -> None:
        """What keeps the tail from following, in the bottom border; ``None`` once it follows."""
        if error != self.error:
            self.error = error
            self._title()

    def show(self, update: TailUpdate) -> None:
        if update.reset:
            self._events.clear()
            self.clear()
        for event in update.events:
            if event.seq not in self._events:
                self._events[event.seq] = event
                self.add_row(*self._cells(event), key=str(event.seq))
        while len(self._events) > self.capacity:
            seq, _ = self._events.popitem(last=False)
            self.remove_row(str(seq))
        if update.events:
            self._layout()  # a longer seq may need a wider column
            self.call_after_refresh(self.scroll_end, animate=False, x_axis=False)

    def _layout(self) -> None:
        """Columns that fit the width; rebuilt (rows too) only when the widths change."""
        newest = next(reversed(self._events), 0)
        wanted = widths(self.scrollable_content_region.width, len(str(newest)))
        if wanted == self._widths:
            return
        self._widths = wanted
        self.clear(columns=True)
        for column in COLUMNS:
            self.add_column(column, width=wanted[column], key=column)
        for event in self._events.values():
            self.add_row(*self._cells(event), key=str(event.seq))

    @staticmethod
    def _cells(event: Event) -> tuple[str | Text, ...]:
        def cut(text: str, style: str = "") -> Text:
            return Text(text, style, overflow="ellipsis", no_wrap=True)

        return (
            Text(str(event.seq), justify="right"),
            numbers.clock_time(event.received_at),
            cut(event.topic, "bold"),
            cut(event.event_id),
            cut(event.source),
            cut(event.payload[:PAYLOAD_CHARS], "dim"),
        )

    def _title(self) -> None:
        where = self.topic if self.topic is not None else "all topics"
        found = "".join(f" · {name} {value}" for name, value in self.filters.items())
        # Text, not a str: a str is Textual markup, and a topic, a query or a server's message
        # holding "[link=" would be interpreted (or crash the dashboard).
        self.border_title = Text(f"tail · {where}{found}" + (" · paused" if self.paused else ""))
        self.border_subtitle = Text(self.error or "p pause/resume · a all topics")
