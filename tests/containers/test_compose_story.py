"""The story of docs/containers.md with real containers, step by step, in this order.

up → healthy → the simulator exits 0 → /stats from the host → only the aggregator has a volume →
non-root, root filesystem read-only → a data dir it cannot write, a second server on the volume:
one line each → down (volume kept) → up: same counts → the same seed again: all duplicates → the
dashboard renders, and stops on the engine's stop signal → a simulator stops on it too → stop:
exit 0 → stop during start-up: no SIGKILL → kill -9 under load, up: nothing acknowledged lost → a
fatal store error: exit 1, and the restart policy brings it back → down -v: nothing left. Ports
are published on 127.0.0.1 only (HOST_PORT), on a port the engine picks.
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

from tests.containers.engine import (
    COMPOSE_FILE,
    Engine,
    Project,
    committed_after,
    lines_of,
    project,
)
from tests.containers.terminal import Terminal
from tests.support import event

SEED = "20261121"  # the seed of the first run and of its re-run (all duplicates)
LOAD_SEED = "20261122"  # the load the aggregator is killed under: new events
UID = "10001"
COUNTERS = ("received", "unique_processed", "duplicate_dropped", "topics")
SIGKILLED = "137"  # what `docker stop` ends with once a container ignored its stop signal
NO_HEALTH = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
# The server whose store breaks on one event (tests/test_isolation.py's launcher), run by compose
# as the aggregator's command: the real crash-only exit, in the real image, under compose.yaml.
FATAL_OVERRIDE = """
services:
  aggregator:
    command:
      - python
      - -c
      - |
        import sys
        from aggregator.store import sqlite, StoreBroken
        from aggregator.__main__ import main
        commit = sqlite.SQLiteStore.commit
        def breaking(self, batches):
            if any(r.event_id == "break-the-store" for b in batches for r in b):
                raise StoreBroken("rollback after disk I/O error failed: disk I/O error")
            return commit(self, batches)
        sqlite.SQLiteStore.commit = breaking
        main(sys.argv[1:])
"""


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


def test_the_root_filesystem_is_read_only_and_data_is_writable(story: Story) -> None:
    compose = story.project
    # compose.yaml's read_only: the programs write nowhere but the volume, and the story runs so.
    outside = compose.compose("exec", "-T", "aggregator", "touch", "/tmp/x", check=False)
    assert outside.returncode != 0 and "Read-only file system" in outside.stderr, outside
    compose.compose("exec", "-T", "aggregator", "touch", "/data/x")
    compose.compose("exec", "-T", "aggregator", "rm", "/data/x")


def test_a_data_dir_the_server_cannot_write_is_a_one_line_error(
    story: Story, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A host directory of root's, as `docker run -v ./data:/data` gives one before its
    # `chown 10001:10001` (docs/containers.md).
    unwritable = tmp_path_factory.mktemp("root-owned")
    unwritable.chmod(0o755)
    image = f"pubsub-aggregator:{story.project.engine.tag}"
    done = story.project.engine.run("run", "--rm", "-v", f"{unwritable}:/data", image, check=False)
    assert done.returncode == 1, done
    assert done.stderr.splitlines() == [
        "aggregator: error: [Errno 13] Permission denied: '/data/aggregator.sqlite3'; the server"
        " runs as uid:gid 10001:10001: give it write access to the data directory"
        " (e.g. chown 10001:10001 /data)"
    ]
    assert list(unwritable.iterdir()) == []


def test_a_second_server_on_the_volume_is_refused_in_one_line(story: Story) -> None:
    # `docker compose run aggregator …` beside the running one: the same volume, so the same
    # store file, which its server holds locked.
    done = story.project.compose("run", "--rm", "-T", "--no-deps", "aggregator", check=False)
    assert done.returncode == 1, done
    errors = [line for line in done.stderr.splitlines() if line.startswith("aggregator: ")]
    assert errors == [
        "aggregator: error: /data/aggregator.sqlite3 is in use by another aggregator; stop it, "
        "or give this one another --data-dir (`fuser /data/aggregator.sqlite3` shows its pid)"
    ]
    assert "Traceback" not in done.stderr


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


def test_the_dashboard_stops_on_the_engines_stop_signal(story: Story) -> None:
    compose = story.project
    terminal = Terminal(
        lambda **popen: compose.start("run", "--rm", "tui", profiles=("tui",), **popen)
    )
    try:
        terminal.wait_for(lambda text: "counters" in text, timeout=120)
        container = one_off(compose, "tui")
        # The server's health check is not the dashboard's: compose.yaml disables it here.
        assert compose.engine.inspect(container, NO_HEALTH) == "none"
        # `docker stop` (compose down, a host shutting down): the dashboard, PID 1 of its
        # container, quits and gives the terminal back; with a signal it ignored, the engine
        # would SIGKILL it after 10 s and compose run would exit 137.
        compose.engine.run("stop", container)
        assert terminal.wait_exit(timeout=60) == 0, terminal.text
    finally:
        terminal.close()


def test_a_simulator_run_stops_on_the_engines_stop_signal(story: Story) -> None:
    compose = story.project
    started = compose.compose(
        *("run", "-d", "-e", "SIMULATOR_EVENTS=10000000", "-e", "SIMULATOR_RATE=2000"),
        "simulator",
    )
    container = started.stdout.split()[-1]
    try:
        assert compose.engine.inspect(container, NO_HEALTH) == "none"
        compose.engine.run("stop", container)
        code = compose.engine.inspect(container, "{{.State.ExitCode}}")
        assert code != SIGKILLED, "the simulator ignored the stop signal and was SIGKILLed"
    finally:
        compose.engine.run("rm", "-f", container, check=False)


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


def test_stop_during_start_up_is_prompt_not_a_sigkill(story: Story) -> None:
    compose = story.project
    container = compose.container("aggregator")
    # Stopped by the test before; stopped again before its imports are done (about 1 s), when
    # the server has no handler of its own yet: a signal the kernel drops for PID 1 unless
    # Python handles it from the start, as it does SIGINT (the image's STOPSIGNAL).
    compose.engine.run("start", container)
    compose.engine.run("stop", container)
    code = compose.engine.inspect(container, "{{.State.ExitCode}}")
    assert code != SIGKILLED, "the stop signal was ignored in start-up; SIGKILLed after 10 s"


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


def test_a_fatal_store_error_exits_1_and_the_restart_policy_brings_it_back(
    story: Story, tmp_path_factory: pytest.TempPathFactory
) -> None:
    compose = story.project
    override = tmp_path_factory.mktemp("fatal") / "compose.override.yaml"
    override.write_text(FATAL_OVERRIDE)
    compose.compose("up", "-d", "--no-build", "aggregator", files=[override])
    compose.wait_healthy("aggregator")
    container = compose.container("aggregator")
    url = compose.url("aggregator")
    kept = httpx.post(url + "/publish", json=event(event_id="kept-before-the-crash"), timeout=30)
    assert kept.status_code == 200, kept.text
    since = f"{time.time():.6f}"  # the engine's clock is this host's
    broken = httpx.post(url + "/publish", json=event(event_id="break-the-store"), timeout=30)
    assert broken.status_code == 503, broken.text
    # The engine's own account: the server died by itself with 1, then compose.yaml's
    # `restart: unless-stopped` started it again; no one ran `up`.
    watch = compose.engine.events(container, since, "die", "start")
    seen: list[str] = []
    for line in lines_of(watch, compose.engine.env, 120, "no restart after the fatal exit"):
        seen.append(line.strip())
        if seen[-1] == "start":
            break
    assert seen == ["die 1", "start"]
    assert "aggregator: fatal: the store's connection is in an unknown state" in compose.logs(
        "aggregator"
    )
    compose.wait_healthy("aggregator")
    events = httpx.get(compose.url("aggregator") + "/events", params={"topic": "t"}, timeout=30)
    assert [e["event_id"] for e in events.json()] == ["kept-before-the-crash"]


def test_down_v_leaves_no_container_network_or_volume(story: Story) -> None:
    compose = story.project
    compose.down()
    assert compose.containers() == []
    assert compose.volumes() == []
    listed = compose.engine.run("volume", "ls", "-q").stdout.split()
    assert story.volumes_seen and not story.volumes_seen & set(listed)
    networks = compose.engine.run("network", "ls", "-q", "--filter", f"name={compose.name}_")
    assert networks.stdout.split() == []


def one_off(compose: Project, service: str) -> str:
    """The one container of ``compose run`` for ``service`` that is running now."""
    listed = compose.engine.run(
        *("ps", "-q", "--filter", f"label=com.docker.compose.project={compose.name}"),
        *("--filter", f"label=com.docker.compose.service={service}"),
        *("--filter", "label=com.docker.compose.oneoff=True"),
    ).stdout.split()
    assert len(listed) == 1, f"{service}: expected one running one-off container, found {listed}"
    return listed[0]
