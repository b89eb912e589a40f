"""The main screen, rendered from fixed data, against committed SVG snapshots: at the size of the
docs' screenshot, and at 80×24, where every key of the help must still be in the footer and no
column may run past its border."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from tests.tui.demo import SIZE, demo_app, warm_up

SMALL = (80, 24)


def then_press(fake: Any, *keys: str) -> Any:
    warm = warm_up(fake)

    async def run_before(pilot: Pilot[None]) -> None:
        await warm(pilot)
        await pilot.press(*keys)

    return run_before


def test_main_screen(snap_compare: Any) -> None:
    app, fake = demo_app()
    assert snap_compare(app, terminal_size=SIZE, run_before=warm_up(fake))


def test_main_screen_at_80x24(snap_compare: Any) -> None:
    app, fake = demo_app()
    assert snap_compare(app, terminal_size=SMALL, run_before=warm_up(fake))


def test_filter_while_typing_at_80x24(snap_compare: Any) -> None:
    """The typed text shows in the input (it was drawn as two border rows, the text hidden)."""
    app, fake = demo_app()
    assert snap_compare(app, terminal_size=SMALL, run_before=then_press(fake, "slash", "o", "r"))


def test_help_at_80x24(snap_compare: Any) -> None:
    app, fake = demo_app()
    assert snap_compare(app, terminal_size=SMALL, run_before=then_press(fake, "question_mark"))


def test_search_screen(snap_compare: Any) -> None:
    """``f``, a query, enter: results newest first, the newest shown whole beside them."""
    app, fake = demo_app()
    keys = ("f", *"receipt", "enter")
    assert snap_compare(app, terminal_size=SIZE, run_before=then_press(fake, *keys))


def test_search_screen_at_80x24(snap_compare: Any) -> None:
    app, fake = demo_app()
    keys = ("f", *"o-0000", "enter")
    assert snap_compare(app, terminal_size=SMALL, run_before=then_press(fake, *keys))
