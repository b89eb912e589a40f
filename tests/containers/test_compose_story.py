"""The story of docs/containers.md with real containers, step by step, in this order.

up → healthy → the simulator exits 0 → /stats from the host → only the aggregator has a volume →
non-root → down (volume kept) → up: same counts → the same seed again: all duplicates → the
dashboard renders → stop: exit 0 → kill -9 under load, up: nothing acknowledged lost → down -v:
nothing left. Ports are published on 127.0.0.1 only (HOST_PORT), on a port the engine picks.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml

from tests.containers.engine import COMPOSE_FILE, Engine, Project, project
from tests.containers.terminal import Terminal

SEED = "20261121"  # the seed of the first run and of its re-run (all duplicates)
LOAD_SEED = "20261122"  # the load the aggregator is killed under: new events
UID = "10001"
COUNTERS = ("received", "unique_processed", "duplicate_dropped", "topics")


@dataclass
class Story:
    project: Project
    first: dict[str, Any] = field(default_factory=dict)  # /stats after the first simulator run
    volumes_seen: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def story(engine: Engine) -> Iterator[Story]:
    settings = {"HOST_PORT": "127.0.0.1:0", "SIMULATOR_SEED": SEED}
    with project(engine, settings=settings) as compose:
        yield Story(compose)


def grace_period(service: str) -> float:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    value = str(compose["services"][service]["stop_grace_period"])
    assert value.endswith("s"), value
    return float(value[:-1])


def test_up_starts_the_aggregator_and_it_becomes_healthy(
    story: Story, figures: dict[str, str]
) -> None:
    # The image was built by containers/test.sh; --no-build proves up uses it as it is.
    story.project.compose("up", "-d", "--no-build")
    seconds = story.project.wait_healthy("aggregator")
    figures["aggregator start → healthy"] = f"{seconds:.1f} s"


def test_the_simulator_runs_once_and_its_checks_pass(story: Story) -> None:
    # Its exit code is its verification: 0 when every /stats delta matched what it sent.
    code = story.project.wait_exit(story.project.container("simulator"))
    assert code == 0, story.project.logs("simulator")


def test_stats_from_the_host(story: Story) -> None:
    stats = story.project.stats()
    assert stats["unique_processed"] > 0 and stats["duplicate_dropped"] > 0  # uts re-sends 20%
    assert stats["received"] == stats["unique_processed"] + stats["duplicate_dropped"]
    assert stats["topics"]
    story.first = stats


def test_only_the_aggregator_has_a_volume_its_named_one(story: Story) -> None:
    mounts = story.project.mounts()
    data = f"{story.project.name}_aggregator-data"
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts["aggregator"]] == [
        ("volume", data, "/data")
    ]
    # The image declares no VOLUME: a simulator or a dashboard gets no anonymous one.
    assert mounts["simulator"] == []
    story.volumes_seen |= {m["Name"] for found in mounts.values() for m in found}


def test_the_server_runs_as_uid_10001_which_owns_the_volume(story: Story) -> None:
    compose = story.project
    # PID 1 is the server itself (exec form), so its owner is the one that matters.
    owners = compose.compose(
        "exec",
        "-T",
        "aggregator",
        "stat",
        "-c",
        "%n %u:%g",
        "/proc/1",
        "/data",
        "/data/aggregator.sqlite3",
    ).stdout.split("\n")
    assert owners[:3] == [
        f"/proc/1 {UID}:{UID}",
        f"/data {UID}:{UID}",
        f"/data/aggregator.sqlite3 {UID}:{UID}",
    ]


def test_down_keeps_the_volume_and_up_brings_back_every_count(story: Story) -> None:
    compose = story.project
    compose.compose("down")
    assert compose.containers() == []
    # compose v1 creates every volume compose.yaml declares, postgres-data too, used or not.
    assert f"{compose.name}_aggregator-data" in compose.volumes()
    compose.compose("up", "-d", "--no-build", "aggregator")
    compose.wait_healthy("aggregator")
    stats = compose.stats()
    assert {k: stats[k] for k in COUNTERS} == {k: story.first[k] for k in COUNTERS}


def test_the_same_seed_again_is_all_duplicates(story: Story) -> None:
    compose = story.project
    rerun = compose.compose(
        "run", "--rm", "-T", "-e", "SIMULATOR_JSON=true", "simulator", check=False
    )
    # It expected new events and checks that they were stored: none were, so it reports the
    # failed check and exits 1 (2 would mean it could not run at all).
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["acked_stored"] == 0
    # The very events of the first run: as many as it had received, every one a duplicate now.
    assert report["acked_duplicates"] == report["events_sent"] == story.first["received"]
    stats = compose.stats()
    assert stats["received"] == 2 * story.first["received"]
    assert stats["unique_processed"] == story.first["unique_processed"]
    assert stats["duplicate_dropped"] == stats["received"] - stats["unique_processed"]


def test_the_dashboard_runs_in_its_container_and_shows_the_topics(story: Story) -> None:
    topics = story.first["topics"]
    assert topics
    terminal = Terminal(
        lambda **popen: story.project.start("run", "--rm", "tui", profiles=("tui",), **popen)
    )
    try:
        screen = terminal.wait_for(lambda text: all(t in text for t in topics), timeout=120)
        assert "topics" in screen
        terminal.type(b"q")
        assert terminal.wait_exit(timeout=60) == 0, terminal.text
    finally:
        terminal.close()


def test_stop_drains_and_exits_0_within_the_grace_period(
    story: Story, figures: dict[str, str]
) -> None:
    compose = story.project
    container = compose.container("aggregator")
    began = time.monotonic()
    compose.compose("stop", "aggregator")
    seconds = time.monotonic() - began
    figures["docker-compose stop aggregator"] = f"{seconds:.1f} s"
    # Exit 0 is the server's own: past the grace period the engine would SIGKILL it (137).
    assert compose.engine.inspect(container, "{{.State.ExitCode}}") == "0", compose.logs(
        "aggregator"
    )
    assert seconds < grace_period("aggregator")


def test_kill_9_under_simulator_load_then_up_loses_nothing_acknowledged(story: Story) -> None:
    compose = story.project
    compose.compose("up", "-d", "--no-build", "aggregator")
    compose.wait_healthy("aggregator")
    url = compose.url("aggregator")
    newest = max(topic["last_seq"] for topic in httpx.get(url + "/topics", timeout=30).json())
    container = compose.container("aggregator")
    first_start = compose.engine.inspect(container, "{{.State.StartedAt}}")
    # New events at a capped rate, so the run is still going when the server dies; retries
    # enough to outlast the restart. Its verification spans the crash: every key of a batch
    # answered 200 must be stored exactly once, and every batch is answered 200 in the end.
    load = compose.start(
        *("run", "--rm", "-T", "-e", f"SIMULATOR_SEED={LOAD_SEED}", "-e", "SIMULATOR_JSON=true"),
        *("-e", "SIMULATOR_EVENTS=40000", "-e", "SIMULATOR_RATE=6000"),
        *("-e", "SIMULATOR_RETRIES=40", "simulator"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Killed once committed events are streaming out of it: mid-load, by its own account.
        seen = committed_after(url, newest, count=6000)
        before_kill = compose.stats()
        compose.engine.run("kill", "--signal", "KILL", container)
        compose.compose("up", "-d", "--no-build", "aggregator")
        compose.wait_healthy("aggregator")
        stdout, stderr = load.communicate(timeout=300)
    finally:
        if load.poll() is None:
            load.kill()
    assert compose.engine.inspect(container, "{{.State.StartedAt}}") != first_start
    assert load.returncode == 0, stdout.decode() + stderr.decode()
    report = json.loads(stdout)
    assert report["retries"] > 0, "the kill did not interrupt the run"
    after = compose.stats()
    assert after["unique_processed"] >= before_kill["unique_processed"]
    assert before_kill["unique_processed"] >= story.first["unique_processed"] + seen
    assert after["unique_processed"] == story.first["unique_processed"] + report["distinct_keys"]
    assert after["received"] == after["unique_processed"] + after["duplicate_dropped"]


def test_down_v_leaves_no_container_network_or_volume(story: Story) -> None:
    compose = story.project
    compose.down()
    assert compose.containers() == []
    assert compose.volumes() == []
    listed = compose.engine.run("volume", "ls", "-q").stdout.split()
    assert story.volumes_seen and not story.volumes_seen & set(listed)
    networks = compose.engine.run("network", "ls", "-q", "--filter", f"name={compose.name}_")
    assert networks.stdout.split() == []


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
