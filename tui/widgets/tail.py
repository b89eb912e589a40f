"""The live tail: the newest events, oldest at the top, following the end."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from tui.data.models import Event
from tui.data.tail import TailUpdate
from tui.widgets import numbers

# Column widths; the payload takes what is left, cut at PAYLOAD_WIDTH characters.
COLUMNS = {"seq": 6, "received": 12, "topic": 16, "event_id": 14, "source": 15, "payload": None}
PAYLOAD_WIDTH = 80


class EventTail(DataTable[str | Text]):
    DEFAULT_CSS = """
    EventTail { border: round $primary; height: 1fr; overflow-x: hidden; }
    """

    def __init__(self, capacity: int = 100, *, id: str | None = None) -> None:
        super().__init__(cursor_type="none", zebra_stripes=True, id=id)
        self.capacity = capacity
        self.topic: str | None = None
        self.paused = False
        self.error: str | None = None

    def on_mount(self) -> None:
        for column, width in COLUMNS.items():
            self.add_column(column, width=width, key=column)
        self._title()

    @property
    def seqs(self) -> list[int]:
        """The seq of each event shown, top to bottom."""
        return [int(str(row.key.value)) for row in self.ordered_rows]

    def follow(self, topic: str | None) -> None:
        self.topic = topic
        self._title()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._title()

    def show_error(self, error: str | None) -> None:
        """The last request's failure, in the bottom border; ``None`` once it works again."""
        if error != self.error:
            self.error = error
            self._title()

    def show(self, update: TailUpdate) -> None:
        if update.reset:
            self.clear()
        for event in update.events:
            if str(event.seq) in self.rows:
                continue
            self.add_row(*self._cells(event), key=str(event.seq))
        surplus = self.row_count - self.capacity
        for row in list(self.ordered_rows)[: max(0, surplus)]:
            self.remove_row(row.key)
        if update.events:
            self.call_after_refresh(self.scroll_end, animate=False, x_axis=False)

    @staticmethod
    def _cells(event: Event) -> tuple[str | Text, ...]:
        payload = event.payload
        if len(payload) > PAYLOAD_WIDTH:
            payload = payload[: PAYLOAD_WIDTH - 1] + "…"
        return (
            Text(str(event.seq), justify="right"),
            numbers.clock_time(event.received_at),
            Text(event.topic, "bold", overflow="ellipsis", no_wrap=True),
            Text(event.event_id, overflow="ellipsis", no_wrap=True),
            Text(event.source, overflow="ellipsis", no_wrap=True),
            Text(payload, "dim"),
        )

    def _title(self) -> None:
        where = self.topic if self.topic is not None else "all topics"
        self.border_title = f"tail · {where}" + (" · paused" if self.paused else "")
        self.border_subtitle = self.error or "p pause/resume · a all topics"
