"""``docs/dashboard.md`` says what the dashboard does: the key table is the help screen's
``KEYS``, word for word, and every option is there with its flag, variable and default."""

from __future__ import annotations

import dataclasses

import pytest

from aggregator.settings import env_name, flag_name
from tests.support import ROOT
from tui.__main__ import ENV_PREFIX, Options
from tui.screens.help import KEYS

PAGE = (ROOT / "docs" / "dashboard.md").read_text()


def table(header: str) -> list[list[str]]:
    """The rows of the first Markdown table whose header line is ``header``."""
    lines = PAGE.splitlines()
    start = lines.index(header) + 2  # past the header and the --- line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_key_table_is_the_help_screens() -> None:
    documented = [(key.strip("`"), does) for key, does in table("| key | does |")]
    assert documented == list(KEYS)


@pytest.mark.parametrize("field", dataclasses.fields(Options), ids=lambda f: f.name)
def test_every_option_is_documented(field: dataclasses.Field[object]) -> None:
    rows = {row[0]: row for row in table("| flag | environment | default | meaning |")}
    flag = f"`{flag_name(field.name)}`"
    assert flag in rows
    _, env, default, _ = rows[flag]
    assert env == f"`{env_name(field, ENV_PREFIX)}`"
    value = field.default
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    assert default == (f"`{shown}`" if shown else "empty (none)")


def test_the_screenshot_is_there() -> None:
    assert "![The dashboard](tui.svg)" in PAGE
    assert (ROOT / "docs" / "tui.svg").is_file()
