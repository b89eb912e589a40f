"""The main screen, rendered from fixed data, against the committed SVG snapshot."""

from __future__ import annotations

from typing import Any

from tests.tui.demo import SIZE, demo_app, warm_up


def test_main_screen(snap_compare: Any) -> None:
    app, fake = demo_app()
    assert snap_compare(app, terminal_size=SIZE, run_before=warm_up(fake))
