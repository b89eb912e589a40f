"""The documentation keeps itself true (as datasette's tests/test_docs.py does, and more).

- Every setting of every program, and every route, is documented.
- Every relative link of the README and the docs pages resolves, anchors included.
- Every command in their ``sh`` blocks is checked: ``make`` targets exist; our programs run with
  ``--help`` and know every flag the docs give them; ``AGGREGATOR_*`` / ``SIMULATOR_*`` variables
  are real settings; ``docker compose`` names real services; any other tool must be one we know.
- The README's "Try it" runs against a real server process and answers what the README says.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from aggregator.config import Config
from aggregator.settings import env_name
from simulator.config import ENV_PREFIX as SIMULATOR_PREFIX
from simulator.config import Options as SimulatorOptions
from tests.support import ROOT, running_server
from tui.__main__ import ENV_PREFIX as TUI_PREFIX
from tui.__main__ import Options as TuiOptions

PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
OPERATING = (ROOT / "docs" / "operating.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Our programs, as the docs may name them, and how to ask each for its --help.
PROGRAMS = {
    "aggregator": [sys.executable, "-m", "aggregator"],
    "aggregator-sim": [sys.executable, "-m", "simulator"],
    "aggregator-tui": [sys.executable, "-m", "tui"],
}
MODULES = ("aggregator", "simulator", "tui", "bench", "mutation")
KNOWN_MODULES = {"pytest", "pip"}
# Tools the docs may show that are not ours: each is documented by its own project.
KNOWN_TOOLS = {"curl", "createdb", "psql", "sudo", "logger", "rsyslogd", "pip", "export", "cd"}
KNOWN_TOOLS |= {"sqlite3"}  # the store's own shell (docs/reliability.md, "A damaged store")
SETTINGS = {
    "AGGREGATOR_": [env_name(f, "AGGREGATOR_") for f in dataclasses.fields(Config)],
    "SIMULATOR_": [env_name(f, SIMULATOR_PREFIX) for f in dataclasses.fields(SimulatorOptions)],
    "AGGREGATOR_TUI_": [env_name(f, TUI_PREFIX) for f in dataclasses.fields(TuiOptions)],
}
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=", re.S)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Config)])
def test_every_server_setting_is_in_the_operating_page(field: str) -> None:
    assert f"`{Config.env_name(field)}`" in OPERATING
    assert f"`{Config.flag_name(field)}`" in OPERATING


@pytest.mark.parametrize(
    "route",
    [
        "POST /publish",
        "POST /v1/logs",
        "POST /loki/api/v1/push",
        "GET /events",
        "GET /stats",
        "GET /health",
        "GET /livez",
        "GET /readyz",
        "GET /subscribe",
        "GET /topics",
        "GET /metrics",
        "GET /openapi.json",
        "POST /_bulk",
        "POST /{index}/_bulk",
    ],
)
def test_every_route_is_in_the_api_page_and_the_readme(route: str) -> None:
    assert f"`{route}`" in API
    assert route.split()[1] in (ROOT / "README.md").read_text()


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {
        slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # an absolute URL: not checked offline
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: broken link {target}"
        assert ROOT in linked.parents or linked == ROOT, f"{page.name}: {target} leaves the repo"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: no heading #{anchor} in {path}"


def commands(page: Path) -> list[tuple[int, str]]:
    """(line number, command) of every command in the page's ``sh`` blocks; continuation lines
    joined, comments and the output lines that follow as ``# …`` dropped."""
    found: list[tuple[int, str]] = []
    inside = False
    pending = ""
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = line.strip() == "```sh"
            continue
        if not inside:
            continue
        text = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not text and not pending:
            continue
        pending += text.rstrip("\\").strip() + " "
        if not text.endswith("\\") and complete(pending):
            found.append((number, pending.strip().rstrip("&").strip()))
            pending = ""
    return found


def complete(command: str) -> bool:
    """Whether ``command`` ends outside a quoted string (a quote may span lines)."""
    try:
        shlex.split(command)
    except ValueError:
        return False
    return True


ALL_COMMANDS = [
    (page, number, command)
    for page in PAGES
    for number, command in commands(page)
    if command and not command.startswith("-")
]


@cache
def help_text(program: tuple[str, ...]) -> str:
    done = subprocess.run(
        [*program, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert done.returncode == 0, f"{' '.join(program)} --help failed: {done.stderr}"
    return done.stdout


@cache
def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


@cache
def compose_services() -> set[str]:
    return set(yaml.safe_load((ROOT / "compose.yaml").read_text())["services"])


def check_command(words: list[str]) -> None:
    while words and ASSIGNMENT.match(words[0]):
        name = words.pop(0).split("=", 1)[0]
        if name.startswith(tuple(SETTINGS)) and name != "AGGREGATOR_URL":
            assert any(name in group for group in SETTINGS.values()), f"no setting {name}"
    if not words:
        return
    tool = words[0].removeprefix(".venv/bin/")
    if tool == "make":
        for target in words[1:]:
            if "=" not in target:
                assert target in make_targets(), f"no make target {target}"
    elif tool in ("python", "python3") and words[1:2] == ["-m"]:
        module = words[2]
        if module not in KNOWN_MODULES:
            assert module.split(".")[0] in MODULES, f"python -m {module}: not ours"
            flags_known(words[3:], (sys.executable, "-m", module))
    elif tool in PROGRAMS:
        flags_known(words[1:], tuple(PROGRAMS[tool]))
    elif tool in ("docker", "docker-compose"):
        rest = words[2:] if tool == "docker" and words[1:2] == ["compose"] else words[1:]
        if rest and rest[0] in ("run", "up", "stop", "start", "logs", "kill", "restart"):
            named = [w for w in rest[1:] if not w.startswith("-") and w in compose_services()]
            others = [w for w in rest[1:] if not w.startswith("-") and "=" not in w]
            assert set(others) <= compose_services() | set(named), f"unknown service in {rest}"
    else:
        assert tool in KNOWN_TOOLS, f"unknown command {tool!r}: check it or add it to KNOWN_TOOLS"


def flags_known(arguments: list[str], program: tuple[str, ...]) -> None:
    text = help_text(program)
    for argument in arguments:
        if argument.startswith("--"):
            flag = argument.split("=", 1)[0]
            assert re.search(rf"(^|\s){re.escape(flag)}\b", text), f"{flag} not in {program} --help"


@pytest.mark.parametrize(
    ("page", "number", "command"),
    ALL_COMMANDS,
    ids=[f"{p.name}:{n}" for p, n, _ in ALL_COMMANDS],
)
def test_every_documented_command_is_real(page: Path, number: int, command: str) -> None:
    for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", command):
        if part:
            check_command(shlex.split(part))


def test_the_commands_are_found() -> None:
    """The check above means something only if it sees the commands."""
    tools = {shlex.split(c)[0] for _, _, c in ALL_COMMANDS}
    assert {"make", "curl", ".venv/bin/aggregator-sim"} <= tools
    assert len(ALL_COMMANDS) > 20


def test_try_it_answers_what_the_readme_says(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Try it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = block.strip().splitlines()
    with running_server(tmp_path) as server:
        host = server.url.removeprefix("http://")
        checked = 0
        prelude = command = ""
        for index, line in enumerate(lines):
            if line.startswith("#"):
                continue
            command += line + "\n"  # bash reads the continuations and the quoted newlines
            if line.endswith("\\") or not complete(command):
                continue
            if ASSIGNMENT.match(command):
                prelude, command = prelude + command, ""  # a variable the next lines use
                continue
            done = subprocess.run(
                ["bash", "-c", prelude + command.replace("localhost:8080", host)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            command = ""
            said = lines[index + 1] if index + 1 < len(lines) else ""
            if not said.startswith("# {"):
                continue
            expected = json.loads(said[2:].split("   ", 1)[0])
            answer = json.loads(done.stdout)
            expected.pop("uptime", None)
            answer.pop("uptime", None)
            assert answer == expected, f"{said} but the server answered {done.stdout}"
            checked += 1
    assert checked == 3


def test_the_readme_starts_fast() -> None:
    """The two commands come first, and the README stays a page a newcomer reads (≤ 300 lines);
    everything else has its page in docs/."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    first_block = readme.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [
        ["make", "run"],
        ["make", "test"],
    ]
