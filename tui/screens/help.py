"""The key reference, over the dashboard."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# Keys

| key | does |
| --- | --- |
| `q` | quit |
| `p` | pause / resume the tail |
| `enter` | on a topic: tail that topic |
| `a` | tail all topics again |
| `/` | filter topics by typing; `enter` keeps the filter, `esc` clears it |
| `s` | sort topics by the next column (a click on a header too; again reverses) |
| `r` | refresh now |
| `?` | this help; `esc` closes it |

Counters come from `GET /stats`, rates from successive snapshots (Δ events / Δ server uptime),
topic counts from `GET /topics` when the server has it, the tail from a `GET /subscribe` stream
(or `GET /events?after=` on a server without one).
When the server does not answer, the dashboard says so and retries with backoff.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 84; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Markdown(HELP)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
