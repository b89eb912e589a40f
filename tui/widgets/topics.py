"""The topic table: sortable (``s``, or a click on a header), filtered by typing after ``/``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
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
    """Which column the table is sorted by, and which way (``reverse``: descending)."""

    column: str = "topic"
    reverse: bool = False

    @classmethod
    def by(cls, column: str) -> Order:
        """A column's first order: names A→Z, counts largest first."""
        return cls(column, reverse=column != "topic")

    def flipped(self) -> Order:
        return Order(self.column, not self.reverse)

    def following(self) -> Order:
        """What ``s`` goes to: this column the other way round if it is in its first order,
        else the next column in its first order (after the last, the first)."""
        if self == Order.by(self.column):
            return self.flipped()
        return Order.by(COLUMNS[(COLUMNS.index(self.column) + 1) % len(COLUMNS)])

    def key(self, row: TopicRow) -> tuple[bool, str | int]:
        value = getattr(row, self.column)
        # Unknown counts sort last either way.
        return (value is None) != self.reverse, value if value is not None else 0

    def apply(self, rows: list[TopicRow]) -> list[TopicRow]:
        """Sorted by the column; rows with equal values stay A→Z by name either way."""
        by_name = sorted(rows, key=lambda row: row.topic)
        return sorted(by_name, key=self.key, reverse=self.reverse)


class TopicTable(DataTable[Text]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Tail")]


class TopicsPanel(Vertical):
    """Holds the rows of the latest snapshot; shows those that match the filter, in order.

    The filter: ``start_filter`` shows an input; typing filters as you type; ``enter`` keeps
    the filter and hides the input (the bottom border says what is filtered), ``clear_filter``
    (``esc``, while typing or after) empties it.
    """

    DEFAULT_CSS = """
    TopicsPanel { border: round $primary; }
    TopicsPanel > Input { display: none; margin: 0 1; }
    TopicsPanel.filtering > Input { display: block; }
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
        # compact: one row, no border (a bordered Input squeezed into one row shows no text).
        yield Input(placeholder="type to filter topics", compact=True)
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
    def typing(self) -> bool:
        """The filter's input is open."""
        return self.has_class("filtering")

    @property
    def shown(self) -> list[str]:
        """The topics as shown, top to bottom."""
        return [row.topic for row in self._shown]

    @property
    def cells(self) -> list[tuple[str, ...]]:
        """Every row as the table shows it, top to bottom (for tests)."""
        table = self.table
        return [tuple(cell.plain for cell in table.get_row_at(i)) for i in range(table.row_count)]

    def show(self, rows: tuple[TopicRow, ...], *, exact: bool, error: str | None = None) -> None:
        """The rows of a snapshot; ``error``: why they may be stale (the last request failed)."""
        self.rows, self.exact, self.error = rows, exact, error
        self._render_rows()

    def sort_by(self, column: str) -> None:
        """A click on a header: sort by ``column`` in its first order; again reverses."""
        self.order = self.order.flipped() if column == self.order.column else Order.by(column)
        self._render_rows()

    def sort_next(self) -> None:
        """``s``: see ``Order.following``."""
        self.order = self.order.following()
        self._render_rows()

    def start_filter(self) -> None:
        self.add_class("filtering")
        self.query_one(Input).focus()
        self._title()
        self.screen.refresh_bindings()

    def clear_filter(self) -> None:
        self.query_one(Input).value = ""
        self._set_filter("")
        self._leave_filter()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._set_filter(event.value.strip())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._leave_filter()

    def _set_filter(self, text: str) -> None:
        if text != self.filter:
            self.filter = text
            self._render_rows()
            self.screen.refresh_bindings()  # the footer offers esc while there is a filter

    def _leave_filter(self) -> None:
        self.remove_class("filtering")
        self.table.focus()
        self._title()
        self.screen.refresh_bindings()

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
        if shown != self._shown:
            self._fill(shown)
        self._title()

    def _fill(self, shown: list[TopicRow]) -> None:
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
        # Text, not str: a str is Textual markup, and a typed "[link=x:/]" crashed the dashboard.
        self.border_title = Text(f"{title} {arrow}")
        if self.typing:
            subtitle = "enter keeps · esc clears"
        else:
            subtitle = f"filter: {self.filter}" if self.filter else ""
        if not self.exact:
            subtitle = (subtitle + "  " if subtitle else "") + "counts need GET /topics"
        self.border_subtitle = Text(self.error or subtitle)
