"""The counters of ``/stats`` and the rates computed from successive ones."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from tui.data.models import Stats
from tui.data.rates import Rates
from tui.widgets import numbers


class Counters(Static):
    DEFAULT_CSS = """
    Counters { border: round $primary; border-title-color: $text; padding: 0 1; height: 6; }
    """

    text = ""  # the panel as plain text, for tests

    def on_mount(self) -> None:
        self.border_title = "counters"
        self.show(None, stale=False)

    def show(self, stats: Stats | None, *, stale: bool) -> None:
        grid = Table.grid(padding=(0, 2))
        grid.add_column()
        grid.add_column(justify="right")
        dim = "dim" if stale else ""
        values = (
            ("received", numbers.count(stats.received if stats else None)),
            ("unique", numbers.count(stats.unique if stats else None)),
            ("duplicates", numbers.count(stats.duplicates if stats else None)),
            ("duplicate ratio", numbers.percent(stats.duplicate_ratio) if stats else "–"),
        )
        for label, value in values:
            grid.add_row(Text(label, "dim"), Text(value, f"bold {dim}".strip()))
        self.text = "\n".join(f"{label} {value}" for label, value in values)
        self.update(grid)
        self.border_subtitle = "stale" if stale else ""


class RatePanel(Vertical):
    DEFAULT_CSS = """
    RatePanel { border: round $primary; padding: 0 1; height: 6; }
    RatePanel > Static { height: 2; }
    RatePanel > Sparkline { height: 2; }
    """

    text = ""  # the panel as plain text, for tests

    def compose(self) -> ComposeResult:
        yield Static(id="rate-text")
        yield Sparkline([], id="rate-history")

    def on_mount(self) -> None:
        self.border_title = "rates"
        self.show(None)

    def show(self, rates: Rates | None) -> None:
        if rates is None:
            text = Text("waiting for a second snapshot…", "dim")
            history: list[float] = []
        else:
            text = Text.assemble(
                ("received ", "dim"),
                (numbers.rate(rates.received), "bold"),
                ("   stored ", "dim"),
                (numbers.rate(rates.unique), "bold"),
            )
            history = list(rates.history)
        self.text = text.plain
        self.query_one("#rate-text", Static).update(text)
        self.query_one(Sparkline).data = history
