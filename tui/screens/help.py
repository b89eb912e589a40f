"""The key reference, over the dashboard.

``KEYS`` is the one list of what each key does: this screen shows it, and the key table of
``docs/dashboard.md`` must say exactly the same (a test compares them, and another checks every
key here is bound and every key the footer offers is here).
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.screens.search import KEYS as SEARCH_KEYS

KEYS: tuple[tuple[str, str], ...] = (
    ("q", "quit"),
    (
        "p",
        "pause / resume the tail (paused, the stream stays open and only the newest events "
        "are kept)",
    ),
    ("enter", "on a topic: tail that topic"),
    ("a", "tail all topics again, without a search filter"),
    ("/", "filter topics by typing; enter keeps the filter, esc clears it"),
    ("esc", "clear the filter, while typing it or after enter"),
    (
        "s",
        "sort topics: each column both ways in turn (topic A→Z, then Z→A; unique, dups and "
        "last seq each largest first, then smallest first; then topic A→Z again); a click on "
        "a header sorts by that column, a second click reverses it",
    ),
    ("r", "refresh now"),
    ("f", "find: the search screen (q, source, time range; its keys below); esc comes back"),
    ("?", "this help; esc, ? or q closes it"),
)

SOURCES = (
    "Counters come from GET /stats, rates from successive snapshots (Δ events / Δ server "
    "uptime), topic counts from GET /topics when the server has it, the tail from a "
    "GET /subscribe stream (or GET /events?after= on a server without one). When the server "
    "does not answer, the dashboard says so and retries with backoff."
)


def key_table(keys: tuple[tuple[str, str], ...] = KEYS) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
    table.add_column(no_wrap=True, style="bold")
    table.add_column(ratio=1)
    for key, does in keys:
        table.add_row(key, does)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 84; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; border-title-color: $text; background: $surface;
        padding: 0 1; }
    HelpScreen #sources { margin-top: 1; color: $text-muted; }
    HelpScreen #search-title { margin-top: 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "keys"
            scroll.border_subtitle = "esc closes"
            yield Static(key_table(), id="keys")
            yield Static(Text("on the search screen (f)", style="bold"), id="search-title")
            yield Static(key_table(SEARCH_KEYS), id="search-keys")
            yield Static(Text(SOURCES), id="sources")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
