"""The connection line: where, whether it answers, since when."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.data.poller import Connection, State
from tui.widgets import numbers

STYLES = {
    State.CONNECTING: ("…", "yellow"),
    State.CONNECTED: ("●", "green"),
    State.DEGRADED: ("▲", "yellow"),
    State.ERROR: ("✖", "red"),
    State.UNREACHABLE: ("✖", "red"),
}


class ConnectionStatus(Static):
    text = ""  # the line as plain text, for tests
    DEFAULT_CSS = """
    ConnectionStatus { height: 1; padding: 0 1; background: $boost; }
    """

    def __init__(self, url: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.show(Connection(url, State.CONNECTING))

    def show(self, connection: Connection) -> None:
        mark, style = STYLES[connection.state]
        text = Text.assemble((f"{mark} {connection.state.value}", f"bold {style}"), "  ")
        text.append(connection.url, "bold")
        if connection.uptime is not None:
            text.append(f"  uptime {numbers.duration(connection.uptime)}")
        if connection.detail:
            text.append(f"  {connection.detail}", style)
        if connection.retry_in is not None:
            text.append(f"  retrying in {connection.retry_in:.0f}s", "dim")
        self.text = text.plain
        self.update(text)
