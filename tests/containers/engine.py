"""compose.yaml on a real engine: one compose project per story, named ``<IMAGE_TAG>-<random>``
(``aggtest-<random>-<random>``), so that ``containers/test.sh`` removes whatever a killed run left.

The engine, the client and the image are chosen and built by ``containers/test.sh`` (``make
test-containers``), which hands them over in the environment: ``DOCKER`` (the client), ``PATH``
with that client first (compose's builder calls ``docker``), ``IMAGE_TAG`` (the image compose.yaml
names, built for this run only). Waits are the engine's own: ``docker events`` for a health
status, ``docker wait`` for an exit, each with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support import ROOT

COMPOSE_FILE = ROOT / "compose.yaml"
# The variables compose.yaml reads: the story sets the ones it needs, none leaks in from the shell.
COMPOSE_VARIABLES = re.compile(
    r"^(AGGREGATOR_\w+|SIMULATOR_\w+|TUI_URL|POSTGRES_PASSWORD|\w*HOST_PORT|IMAGE_TAG|TERM)$"
)
PROJECT_LABEL = "com.docker.compose.project"
Completed = subprocess.CompletedProcess[str]


class EngineError(AssertionError):
    """A docker or docker-compose command failed; the message has its output."""


@dataclass(frozen=True)
class Engine:
    docker: str
    env: dict[str, str]
    env_file: Path  # empty: an .env beside compose.yaml would be read otherwise

    @classmethod
    def from_environment(cls, env_file: Path) -> Engine | None:
        docker = os.environ.get("DOCKER", "")
        tag = os.environ.get("IMAGE_TAG", "")
        if not (docker and tag):
            return None
        env = {key: value for key, value in os.environ.items() if not COMPOSE_VARIABLES.match(key)}
        env.update(DOCKER_BUILDKIT="1", COMPOSE_DOCKER_CLI_BUILD="1", IMAGE_TAG=tag)
        env_file.write_text("")
        return cls(docker, env, env_file)

    def run(self, *argv: str, timeout: float = 120, check: bool = True) -> Completed:
        return run([self.docker, *argv], self.env, timeout, check)

    def inspect(self, target: str, template: str) -> str:
        return self.run("inspect", "-f", template, target).stdout.strip()

    @property
    def tag(self) -> str:
        return self.env["IMAGE_TAG"]

    def events(self, container: str, since: str, *kinds: str) -> list[str]:
        """``docker events`` of ``container`` of those kinds from ``since`` on, as the command
        to watch them with ``lines_of``: each line ``<status> <exit code or nothing>``."""
        return [
            *(self.docker, "events", "--since", since, "--filter", f"container={container}"),
            *(word for kind in kinds for word in ("--filter", f"event={kind}")),
            *("--format", '{{.Status}} {{index .Actor.Attributes "exitCode"}}'),
        ]


def run(argv: Sequence[str], env: dict[str, str], timeout: float, check: bool) -> Completed:
    done = subprocess.run(
        list(argv), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise EngineError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


@dataclass
class Project:
    """One compose project: its own containers, networks and volumes, all named after it."""

    engine: Engine
    settings: dict[str, str] = field(default_factory=dict)
    profiles: tuple[str, ...] = ()
    name: str = ""  # the run's image tag and a random suffix

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.engine.tag}-{secrets.token_hex(4)}"

    def compose(
        self, *argv: str, timeout: float = 300, check: bool = True, files: Sequence[Path] = ()
    ) -> Completed:
        """A compose command; ``files`` are override files on top of compose.yaml."""
        return run(self.command(*argv, files=files), self.env, timeout, check)

    def start(
        self, *argv: str, profiles: Sequence[str] = (), **popen: Any
    ) -> subprocess.Popen[bytes]:
        """A compose command left running (a simulator under load, a dashboard)."""
        command = self.command(*argv, profiles=profiles)
        return subprocess.Popen(command, env=self.env, cwd=ROOT, **popen)

    def command(
        self, *argv: str, profiles: Sequence[str] = (), files: Sequence[Path] = ()
    ) -> list[str]:
        chosen = [*self.profiles, *profiles]
        return [
            *("docker-compose", "-f", str(COMPOSE_FILE)),
            *(word for path in files for word in ("-f", str(path))),
            *("--env-file", str(self.engine.env_file), "-p", self.name),
            *(word for name in chosen for word in ("--profile", name)),
            *argv,
        ]

    @property
    def env(self) -> dict[str, str]:
        return {**self.engine.env, **self.settings}

    def container(self, service: str) -> str:
        found = self.compose("ps", "-q", service).stdout.split()
        assert len(found) == 1, f"{service}: expected one container, found {found}"
        return found[0]

    def containers(self) -> list[str]:
        listed = self.engine.run(
            "ps", "-aq", "--no-trunc", "--filter", f"label={PROJECT_LABEL}={self.name}"
        )
        return listed.stdout.split()

    def volumes(self) -> list[str]:
        listed = self.engine.run(
            "volume", "ls", "-q", "--filter", f"label={PROJECT_LABEL}={self.name}"
        )
        return listed.stdout.split()

    def mounts(self) -> dict[str, list[dict[str, Any]]]:
        """Each container's mounts, by compose service name."""
        result: dict[str, list[dict[str, Any]]] = {}
        for container in self.containers():
            service = self.engine.inspect(
                container, '{{index .Config.Labels "com.docker.compose.service"}}'
            )
            mounts = json.loads(self.engine.inspect(container, "{{json .Mounts}}"))
            result.setdefault(service, []).extend(mounts)
        return result

    def url(self, service: str) -> str:
        """The service's port 8080 as published on the host (127.0.0.1, a free port)."""
        address = self.compose("port", service, "8080").stdout.strip()
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1", f"{service} is published on {address}, not on loopback only"
        return f"http://127.0.0.1:{port}"

    def wait_healthy(self, service: str, timeout: float = 120) -> float:
        """Seconds from the container's start to its health check's first pass; waits for the
        engine's ``health_status`` event rather than polling."""
        container = self.container(service)
        started = self.engine.inspect(container, "{{.State.StartedAt}}")
        watch = [
            *(self.engine.docker, "events", "--since", started, "--filter"),
            *(f"container={container}", "--filter", "event=health_status"),
            *("--format", "{{.Status}} {{.TimeNano}}"),
        ]
        for line in lines_of(watch, self.engine.env, timeout, f"{service} never became healthy"):
            status, _, nanoseconds = line.rpartition(" ")
            if status == "health_status: healthy":
                return int(nanoseconds) / 1e9 - parse_time(started)
            assert status != "health_status: unhealthy", self.logs(service)
        raise AssertionError("unreachable")  # lines_of raises at its deadline

    def wait_exit(self, container: str, timeout: float = 300) -> int:
        return int(self.engine.run("wait", container, timeout=timeout).stdout.strip())

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service, check=False).stdout

    def stats(self, service: str = "aggregator") -> dict[str, Any]:
        response = httpx.get(self.url(service) + "/stats", timeout=30)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def down(self) -> None:
        """Everything of the project, volumes included; idempotent."""
        self.compose("down", "-v", "--remove-orphans", "--timeout", "30")


def lines_of(argv: Sequence[str], env: dict[str, str], timeout: float, what: str) -> Iterator[str]:
    """The stdout lines of a long-running command as they come, until ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with subprocess.Popen(list(argv), env=env, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        pending = b""
        try:
            while True:
                remaining = deadline - time.monotonic()
                ready, _, _ = select.select([process.stdout], [], [], max(remaining, 0))
                if not ready:
                    raise AssertionError(f"{what} within {timeout} s")
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"{what}: {' '.join(argv)} ended")
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode()
        finally:
            process.kill()


def parse_time(stamp: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as seconds since the epoch."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return seconds + float("0." + (fraction or "0"))


@contextmanager
def project(engine: Engine, **kwargs: Any) -> Iterator[Project]:
    story = Project(engine, **kwargs)
    try:
        yield story
    finally:
        story.down()


def committed_after(url: str, after: int, count: int) -> int:
    """Follow ``/subscribe`` from ``after`` until ``count`` newly committed events went by."""
    seen = 0
    timeout = httpx.Timeout(30, read=60)
    with httpx.stream("GET", url + "/subscribe", params={"after": after}, timeout=timeout) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("id:"):
                seen += 1
                if seen >= count:
                    return seen
    raise AssertionError(f"the stream ended after {seen} events")
