"""The engine tests: run by ``make test-containers`` (``containers/test.sh``), never by ``make
test`` (``norecursedirs`` in pyproject.toml). A story's steps are tests run in order; once one
fails, the later ones are reported as not run (xfail), not as failures of their own."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.containers.engine import Engine

FIGURES: dict[str, str] = {}
FAILED = pytest.StashKey[str]()  # on a module: the first step of its story that failed


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    found = Engine.from_environment(tmp_path_factory.mktemp("compose") / "empty.env")
    if found is None:
        message = "no engine handed over: run `make test-containers` (containers/test.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def figures() -> Iterator[dict[str, str]]:
    """Measurements a story reports (time to healthy, stop time); printed at the end."""
    yield FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("container figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
    docker = os.environ.get("DOCKER")
    if docker:  # what the stories left behind: nothing of theirs
        listed = subprocess.run(
            [docker, "volume", "ls"], capture_output=True, text=True, check=False
        )
        terminalreporter.section("docker volume ls, after the stories")
        terminalreporter.write(listed.stdout + listed.stderr)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    not_run = (pytest.skip.Exception, pytest.xfail.Exception)
    if call.excinfo is not None and not call.excinfo.errisinstance(not_run) and item.parent:
        item.parent.stash.setdefault(FAILED, item.name)


def pytest_runtest_setup(item: pytest.Item) -> None:
    failed = item.parent.stash.get(FAILED, None) if item.parent else None
    if failed is not None:
        pytest.xfail(f"not run: the story stopped at {failed}")
