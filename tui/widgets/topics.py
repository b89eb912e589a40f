"""The topic table: sortable (``s``, or a click on a header), filtered by typing after ``/``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input

from tui.data.models import TopicRow
from tui.widgets import numbers

COLUMNS = ("topic", "unique", "duplicates", "last_seq")
WIDTHS = {"topic": 18, "unique": 8, "duplicates": 7, "last_seq": 8}
HEADERS = {"topic": "topic", "unique": "unique", "duplicates": "dups", "last_seq": "last seq"}


@dataclass(frozen=True, slots=True)
class Order:
    column: str = "topic"
    reverse: bool = False

    def key(self, row: TopicRow) -> tuple[bool, str | int]:
        value = getattr(row, self.column)
        # Unknown counts sort last either way.
        return (value is None) != self.reverse, value if value is not None else 0

    def apply(self, rows: list[TopicRow]) -> list[TopicRow]:
        return sorted(rows, key=self.key, reverse=self.reverse)


class TopicTable(DataTable[Text]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Tail topic")]


class TopicsPanel(Vertical):
    """Holds the rows of the latest snapshot; shows those that match the filter, in order."""

    DEFAULT_CSS = """
    TopicsPanel { border: round $primary; }
    TopicsPanel > Input { display: none; border: none; height: 1; padding: 0 1; }
    TopicsPanel.filtering > Input, TopicsPanel.filtered > Input { display: block; }
    TopicsPanel > TopicTable { height: 1fr; }
    """

    class Chosen(Message):
        """Enter on a topic: tail it."""

        def __init__(self, topic: str) -> None:
            super().__init__()
            self.topic = topic

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: tuple[TopicRow, ...] = ()
        self.exact = True
        self.order = Order()
        self.filter = ""
        self.error: str | None = None
        self._shown: list[TopicRow] = []

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter topics (enter or esc to leave)", id="topic-filter")
        table = TopicTable(cursor_type="row", zebra_stripes=True, id="topic-table")
        for column in COLUMNS:
            table.add_column(HEADERS[column], width=WIDTHS[column], key=column)
        yield table

    def on_mount(self) -> None:
        self._title()

    @property
    def table(self) -> TopicTable:
        return self.query_one(TopicTable)

    @property
    def shown(self) -> list[str]:
        """The topics as shown, top to bottom."""
        return [row.topic for row in self._shown]

    def show(self, rows: tuple[TopicRow, ...], *, exact: bool, error: str | None = None) -> None:
        """The rows of a snapshot; ``error``: why they may be stale (the last request failed)."""
        self.rows, self.exact, self.error = rows, exact, error
        self._render_rows()

    def sort_by(self, column: str) -> None:
        """Sort by ``column``; again on the same column reverses. Counts start largest first."""
        if column == self.order.column:
            self.order = Order(column, not self.order.reverse)
        else:
            self.order = Order(column, reverse=column != "topic")
        self._render_rows()

    def cycle_sort(self) -> None:
        following = COLUMNS[(COLUMNS.index(self.order.column) + 1) % len(COLUMNS)]
        self.sort_by(following)

    def start_filter(self) -> None:
        self.add_class("filtering")
        self.query_one(Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter = event.value.strip()
        self.set_class(bool(self.filter), "filtered")
        self._render_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._leave_filter()

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape" and self.query_one(Input).has_focus:
            event.stop()
            self.query_one(Input).value = ""
            self._leave_filter()

    def _leave_filter(self) -> None:
        self.remove_class("filtering")
        self.table.focus()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Chosen(event.row_key.value))

    def _render_rows(self) -> None:
        needle = self.filter.casefold()
        shown = self.order.apply([row for row in self.rows if needle in row.topic.casefold()])
        self._title()
        if shown == self._shown:
            return
        table = self.table
        current = None
        if table.row_count and 0 <= table.cursor_row < table.row_count:
            current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self._shown = shown
        table.clear()
        for row in shown:
            table.add_row(
                Text(row.topic, overflow="ellipsis", no_wrap=True),
                Text(numbers.count(row.unique), justify="right"),
                Text(numbers.count(row.duplicates), justify="right"),
                Text(numbers.count(row.last_seq), justify="right"),
                key=row.topic,
            )
        if current is not None and current in {row.topic for row in shown}:
            table.move_cursor(row=table.get_row_index(current), animate=False)

    def _title(self) -> None:
        arrow = "▼" if self.order.reverse else "▲"
        title = f"topics ({len(self._shown)}/{len(self.rows)}) by {HEADERS[self.order.column]}"
        self.border_title = f"{title} {arrow}"
        subtitle = f"filter: {self.filter}" if self.filter else ""
        if not self.exact:
            subtitle = (subtitle + "  " if subtitle else "") + "counts need GET /topics"
        self.border_subtitle = self.error or subtitle
