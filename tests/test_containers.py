"""The image and the compose file, checked without a container engine (tests/containers runs
them on a real one: ``make test-containers``).

Nothing here copies a command or a setting by hand: the Dockerfile's final stage and compose.yaml
are parsed, and the tests run the very command lines and environments they name as real processes.
What a container adds is replaced, each time saying so: the volume at ``/data`` by a temporary
directory, compose's service names by ``127.0.0.1``, the image's ``/usr/local/bin`` (where pip put
the console scripts) by this virtualenv's ``bin``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from aggregator.config import load_config
from simulator.config import PRESETS, load_options
from tests.support import ROOT, ServerProcess
from tui.__main__ import parse_args as tui_args

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
VOLUME = "/data"
SEED = "20261121"  # the one seed both simulator runs of the persistence story share
DEFAULTED = re.compile(r"\$\{(?P<name>\w+):-(?P<default>[^}]*)\}")


# ---- reading the Dockerfile ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stage:
    """What the final stage of the Dockerfile says about the running container."""

    base: str
    env: dict[str, str]
    cmd: list[str]
    healthcheck: list[str]
    user: str
    volumes: list[str]
    exposed: list[str]
    stop_signal: str


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continuation, where Docker drops comment lines too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    return result


def exec_form(arguments: str, what: str) -> list[str]:
    """A JSON-array command; the shell form would put /bin/sh between PID 1 and the program."""
    argv = json.loads(arguments)
    assert isinstance(argv, list), f"{what} must be in exec form: {arguments}"
    assert all(isinstance(word, str) for word in argv)
    return argv


def final_stage() -> Stage:
    parsed = instructions(DOCKERFILE.read_text())
    starts = [i for i, (keyword, _) in enumerate(parsed) if keyword == "FROM"]
    assert starts, "no FROM in the Dockerfile"
    base = parsed[starts[-1]][1].split()[0]
    env: dict[str, str] = {}
    cmd: list[str] = []
    healthcheck: list[str] = []
    user = "root"
    volumes: list[str] = []
    exposed: list[str] = []
    stop_signal = "SIGTERM"  # the engine's default
    for keyword, arguments in parsed[starts[-1] + 1 :]:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, equals, value = pair.partition("=")
                assert equals, f"ENV {arguments}: use the NAME=value form"
                env[name] = value
        elif keyword == "CMD":
            cmd = exec_form(arguments, "CMD")
        elif keyword == "HEALTHCHECK":
            _options, marker, command = arguments.partition("CMD ")
            assert marker, f"HEALTHCHECK {arguments}: expected options then CMD [...]"
            healthcheck = exec_form(command, "HEALTHCHECK CMD")
        elif keyword == "USER":
            user = arguments
        elif keyword == "VOLUME":
            volumes += json.loads(arguments) if arguments.startswith("[") else arguments.split()
        elif keyword == "EXPOSE":
            exposed += arguments.split()
        elif keyword == "STOPSIGNAL":
            stop_signal = arguments
    return Stage(base, env, cmd, healthcheck, user, volumes, exposed, stop_signal)


def container_env(*layers: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """The whole environment of a process as its container would see it: nothing inherited from
    this test run but PATH, with this virtualenv's scripts first."""
    path = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    merged: dict[str, str] = {"PATH": path}
    for layer in layers:
        merged.update(layer)
    merged.update(overrides)
    return merged


# ---- reading compose.yaml ------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(compose, dict)
    return compose


def interpolate(value: object) -> str:
    """``${NAME:-default}`` as compose resolves it with NAME unset: the documented default.
    Ignoring this machine's environment keeps the tests deterministic."""
    text = str(value)
    resolved = DEFAULTED.sub(lambda match: match.group("default"), text)
    assert "${" not in resolved, f"{text!r}: every variable in compose.yaml needs a default"
    return resolved


def service_process(
    compose: dict[str, Any], stage: Stage, name: str
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one compose service's container."""
    service = compose["services"][name]
    environment = service.get("environment", {})
    assert isinstance(environment, dict), f"{name}: environment as a mapping"
    command = service.get("command", stage.cmd)
    assert isinstance(command, list), f"{name}: command in exec form (a list)"
    return command, {**stage.env, **{key: interpolate(v) for key, v in environment.items()}}


def internal_networks(compose: dict[str, Any]) -> set[str]:
    networks = compose.get("networks") or {}
    return {name for name, spec in networks.items() if (spec or {}).get("internal")}


# ---- the image -----------------------------------------------------------------------------------


def local_url(server: ServerProcess) -> str:
    """The server logs the address it bound (0.0.0.0 in the image); connect over loopback."""
    return f"http://127.0.0.1:{urlsplit(server.url).port}"


def stats(url: str) -> dict[str, Any]:
    response = httpx.get(url + "/stats", timeout=30)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_final_stage_is_a_non_root_server_that_declares_no_volume() -> None:
    stage = final_stage()
    assert stage.base == "python:3.11-slim"
    assert stage.user.split(":")[0] not in ("", "0", "root")
    # The data volume is the aggregator service's (compose.yaml); a VOLUME in the image would give
    # every container of it, the simulator's and the dashboard's too, an anonymous one.
    assert stage.volumes == []
    assert stage.env["AGGREGATOR_DATA_DIR"] == VOLUME
    assert stage.env["AGGREGATOR_HOST"] == "0.0.0.0"
    assert stage.env["AGGREGATOR_PORT"] == "8080"
    assert "8080" in stage.exposed
    assert stage.healthcheck[0] == "python"  # the interpreter that is there anyway
    # Python handles SIGINT from its start, and the server treats it as SIGTERM; a SIGTERM sent
    # to PID 1 before any handler exists is dropped (tests/containers: stop during start-up).
    assert stage.stop_signal == "SIGINT"


def test_image_command_serves_passes_its_healthcheck_and_drains_on_its_stop_signal(
    tmp_path: Path,
) -> None:
    stage = final_stage()
    # The image's ENV, exactly, but for two values a container gets from elsewhere: /data is a
    # volume mount (here a temporary directory) and 8080 is the container's own port (here any
    # free one: 0, read back from the log, so no other process can take it in between).
    env = container_env(stage.env, AGGREGATOR_DATA_DIR=str(tmp_path), AGGREGATOR_PORT="0")
    server = ServerProcess([], env=env, command=stage.cmd, inherit_env=False)
    try:
        server.wait_ready()
        assert "listening on http://0.0.0.0:" in server.log()  # the image's AGGREGATOR_HOST
        port = str(urlsplit(server.url).port)
        # The HEALTHCHECK runs in the container's environment, where AGGREGATOR_PORT is the port
        # the server really listens on.
        probe_env = {**env, "AGGREGATOR_PORT": port}
        probe = subprocess.run(
            stage.healthcheck, env=probe_env, capture_output=True, text=True, timeout=30
        )
        assert probe.returncode == 0, probe.stderr
        assert server.terminate(signum=signal.Signals[stage.stop_signal]) == 0, server.log()
    finally:
        server.kill()
    assert (tmp_path / "aggregator.sqlite3").exists()
    # And the probe does probe: with the server gone it reports unhealthy.
    down = subprocess.run(stage.healthcheck, env=probe_env, capture_output=True, timeout=30)
    assert down.returncode == 1


# ---- compose -------------------------------------------------------------------------------------


def test_compose_has_the_documented_shape() -> None:
    compose = load_compose()
    stage = final_stage()
    services = compose["services"]
    internal = internal_networks(compose)
    assert internal, "an internal network for everything but the aggregators"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

    aggregator = services["aggregator"]
    assert "command" not in aggregator  # the image's CMD
    assert any(str(port).endswith(":8080") for port in aggregator["ports"])
    volume, _, target = aggregator["volumes"][0].partition(":")
    assert target == VOLUME and volume in compose["volumes"]  # a named volume, not a bind mount
    assert "healthcheck" in aggregator
    assert set(aggregator["networks"]) - internal, "the aggregator needs a network with a route"

    simulator = services["simulator"]
    assert simulator["depends_on"]["aggregator"]["condition"] == "service_healthy"
    command, env = service_process(compose, stage, "simulator")
    assert command[0] in scripts
    assert env["SIMULATOR_URL"] == "http://aggregator:8080"
    assert env["SIMULATOR_PRESET"] in PRESETS

    tui = services["tui"]
    assert tui["profiles"] == ["tui"]
    assert tui["tty"] and tui["stdin_open"]
    command, env = service_process(compose, stage, "tui")
    assert command[0] in scripts
    assert tui_args([], env).url == "http://aggregator:8080"

    # Only the aggregators are reachable from the host; everything else is on internal networks.
    for name, service in services.items():
        image = service.get("image", "")
        if name != "postgres":
            assert service.get("build") == "." and image == aggregator["image"], name
        if "ports" in service:
            assert "command" not in service, f"{name} publishes a port but is not an aggregator"
        else:
            assert set(service["networks"]) <= internal, f"{name} should be internal only"


def test_compose_postgres_profile_runs_two_aggregators_on_postgres_16() -> None:
    compose = load_compose()
    stage = final_stage()
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16-alpine"
    assert services["postgres"]["profiles"] == ["postgres"]
    assert "healthcheck" in services["postgres"]
    on_postgres = [
        name
        for name in services
        if service_process(compose, stage, name)[1]
        .get("AGGREGATOR_DATABASE_URL", "")
        .startswith("postgresql://")
    ]
    assert len(on_postgres) == 2
    for name in on_postgres:
        assert services[name]["profiles"] == ["postgres"]
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Nothing else is in that profile: without --profile postgres, the store is SQLite.
    assert "AGGREGATOR_DATABASE_URL" not in service_process(compose, stage, "aggregator")[1]


def test_compose_settings_are_ones_the_programs_accept(tmp_path: Path) -> None:
    compose = load_compose()
    stage = final_stage()
    for name in ("aggregator", "aggregator-pg-a", "aggregator-pg-b"):
        config = load_config([], service_process(compose, stage, name)[1])
        assert (config.host, config.port, str(config.data_dir)) == ("0.0.0.0", 8080, VOLUME)
    options = load_options([], service_process(compose, stage, "simulator")[1])
    assert options.url == "http://aggregator:8080"
    # Every token-like value (bearer tokens) defaults to empty: none required until one is set.
    env = service_process(compose, stage, "aggregator")[1]
    assert env.get("AGGREGATOR_PUBLISH_TOKEN") == env.get("AGGREGATOR_READ_TOKEN") == ""
    assert options.token == options.read_token == ""
    assert service_process(compose, stage, "tui")[1]["AGGREGATOR_TUI_TOKEN"] == ""
    # The clients send the very tokens the server requires: one variable each, set once.
    server = compose["services"]["aggregator"]["environment"]
    simulator = compose["services"]["simulator"]["environment"]
    assert simulator["SIMULATOR_TOKEN"] == server["AGGREGATOR_PUBLISH_TOKEN"]
    assert simulator["SIMULATOR_READ_TOKEN"] == server["AGGREGATOR_READ_TOKEN"]
    tui = compose["services"]["tui"]["environment"]
    assert tui["AGGREGATOR_TUI_TOKEN"] == server["AGGREGATOR_READ_TOKEN"]


def test_compose_passes_program_settings_through_under_their_own_names() -> None:
    """`AGGREGATOR_WORKERS=8 docker compose up` sets the server's AGGREGATOR_WORKERS, and a
    variable only compose.yaml reads (a host port) never looks like a program's setting."""
    passed_through = re.compile(r"^\s*(?P<key>\w+): (?:&[\w-]+ )?\$\{(?P<name>\w+):-")
    for line in COMPOSE.read_text().splitlines():
        for match in re.finditer(r"\$\{(?P<name>(?:AGGREGATOR|SIMULATOR)_\w+)", line):
            same = passed_through.match(line)
            assert same and same["key"] == same["name"] == match["name"], line


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_validates_the_file() -> None:
    # CI installs docker-compose (.ci/run) and `make lint` runs this same check.
    subprocess.run(
        [
            *("docker-compose", "-f", str(COMPOSE)),
            *("--profile", "tui", "--profile", "postgres"),
            *("config", "-q"),
        ],
        check=True,
        timeout=60,
    )


@pytest.mark.slow
def test_compose_story_data_survives_the_server_and_a_rerun_is_all_duplicates(
    tmp_path: Path,
) -> None:
    """`docker compose up`, `down`, `up` with processes: the aggregator service on its named
    volume (a temporary directory), the simulator service's preset against it, twice."""
    compose = load_compose()
    stage = final_stage()
    server_command, server_env = service_process(compose, stage, "aggregator")
    sim_command, sim_env = service_process(compose, stage, "simulator")
    volume = tmp_path / "aggregator-data"

    def start() -> ServerProcess:
        # Port 0: compose maps the container's 8080; here any free port, read from the log.
        env = container_env(server_env, AGGREGATOR_DATA_DIR=str(volume), AGGREGATOR_PORT="0")
        server = ServerProcess([], env=env, command=server_command, inherit_env=False)
        server.wait_ready()
        return server

    def simulate(url: str) -> subprocess.CompletedProcess[str]:
        # The service's URL names the compose service; here it is the process on loopback. The
        # seed is fixed as a user would for this demo (`SIMULATOR_SEED=… docker compose up`).
        env = container_env(sim_env, SIMULATOR_URL=url, SIMULATOR_SEED=SEED)
        return subprocess.run(sim_command, env=env, capture_output=True, text=True, timeout=300)

    server = start()
    try:
        first = simulate(local_url(server))
        assert first.returncode == 0, first.stdout + first.stderr
        after_first = stats(local_url(server))
        assert server.terminate(signum=signal.Signals[stage.stop_signal]) == 0, server.log()
    finally:
        server.kill()
    assert after_first["unique_processed"] > 0

    server = start()
    try:
        url = local_url(server)
        restarted = stats(url)
        for counter in ("received", "unique_processed", "duplicate_dropped", "topics"):
            assert restarted[counter] == after_first[counter], counter
        second = simulate(url)
        # The simulator expects new events; every one is already stored, so its check fails,
        # by design (1: a check failed; 2 would mean it could not run at all).
        assert second.returncode == 1, second.stdout + second.stderr
        after_second = stats(url)
        assert server.terminate(signum=signal.Signals[stage.stop_signal]) == 0, server.log()
    finally:
        server.kill()
    assert after_second["received"] == 2 * after_first["received"]
    assert after_second["unique_processed"] == after_first["unique_processed"]
    assert after_second["duplicate_dropped"] == (
        after_second["received"] - after_second["unique_processed"]
    )
    assert after_second["topics"] == after_first["topics"]
