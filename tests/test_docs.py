"""The README documents every setting and endpoint (as datasette's tests/test_docs.py does)."""

from __future__ import annotations

import dataclasses

import pytest

from aggregator.config import Config
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Config)])
def test_every_setting_is_in_the_readme(field: str) -> None:
    assert f"`{Config.env_name(field)}`" in README
    assert f"`{Config.flag_name(field)}`" in README


@pytest.mark.parametrize(
    "route",
    [
        "POST /publish",
        "GET /events",
        "GET /stats",
        "GET /health",
        "GET /subscribe",
        "GET /topics",
        "GET /metrics",
    ],
)
def test_every_endpoint_is_in_the_readme(route: str) -> None:
    assert f"`{route}`" in README
