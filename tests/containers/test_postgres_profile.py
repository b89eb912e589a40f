"""The postgres profile with real containers: PostgreSQL and two aggregators sharing it agree, and
a PostgreSQL restart under load loses nothing acknowledged."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.containers.engine import Engine, Project, committed_after, project
from tests.support import event

SEED = "20261123"
LOAD_SEED = "20261124"  # new events, published while PostgreSQL restarts
PAGE = 1000


@pytest.fixture(scope="module")
def pg(engine: Engine) -> Iterator[Project]:
    loopback = {name: "127.0.0.1:0" for name in ("HOST_PORT", "PG_A_HOST_PORT", "PG_B_HOST_PORT")}
    with project(engine, settings=loopback, profiles=("postgres",)) as compose:
        yield compose


def simulate(compose: Project, service: str) -> tuple[int, dict[str, Any]]:
    """One seeded simulator run against ``service``, on compose's network; (exit, report)."""
    done = compose.compose(
        *("run", "--rm", "-T", "--no-deps", "-e", f"SIMULATOR_URL=http://{service}:8080"),
        *("-e", f"SIMULATOR_SEED={SEED}", "-e", "SIMULATOR_JSON=true", "simulator"),
        check=False,
    )
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(done.stdout + done.stderr) from None
    return done.returncode, report


def every_event(url: str, topic: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = httpx.get(
            url + "/events",
            params={"topic": topic, "limit": PAGE, "offset": len(events)},
            timeout=30,
        )
        page.raise_for_status()
        events += page.json()
        if len(page.json()) < PAGE:
            return events


def test_both_aggregators_become_healthy_on_postgres(pg: Project) -> None:
    pg.compose("up", "-d", "--no-build", "aggregator-pg-a", "aggregator-pg-b")
    pg.wait_healthy("postgres")
    pg.wait_healthy("aggregator-pg-a")
    pg.wait_healthy("aggregator-pg-b")
    mounts = pg.mounts()
    # The store is PostgreSQL's: no volume on the aggregators, the named one on the database.
    assert mounts["aggregator-pg-a"] == mounts["aggregator-pg-b"] == []
    assert [(m["Name"], m["Destination"]) for m in mounts["postgres"]] == [
        (f"{pg.name}_postgres-data", "/var/lib/postgresql/data")
    ]


def test_events_sent_through_one_are_duplicates_through_the_other_and_both_agree(
    pg: Project,
) -> None:
    code, first = simulate(pg, "aggregator-pg-a")
    assert code == 0, first
    # The same events through the other aggregator: the database already has every key, so
    # none is stored and the run's own check that new events were stored fails (exit 1).
    code, second = simulate(pg, "aggregator-pg-b")
    assert code == 1, second
    assert second["acked_stored"] == 0
    assert second["acked_duplicates"] == second["events_sent"] == first["events_sent"]

    a, b = pg.url("aggregator-pg-a"), pg.url("aggregator-pg-b")
    stats_a, stats_b = (httpx.get(url + "/stats", timeout=30).json() for url in (a, b))
    del stats_a["uptime"], stats_b["uptime"]
    assert stats_a == stats_b
    assert stats_a["received"] == 2 * first["events_sent"]
    assert stats_a["unique_processed"] == first["distinct_keys"]
    assert (
        httpx.get(a + "/topics", timeout=30).json() == httpx.get(b + "/topics", timeout=30).json()
    )
    stored = 0
    for topic in stats_a["topics"]:
        events = every_event(a, topic)
        assert events == every_event(b, topic)
        stored += len(events)
    assert stored == first["distinct_keys"]


def test_a_postgresql_restart_under_load_loses_nothing_acknowledged(
    pg: Project, figures: dict[str, str]
) -> None:
    a, b = pg.url("aggregator-pg-a"), pg.url("aggregator-pg-b")
    before = httpx.get(a + "/stats", timeout=30).json()
    newest = max(topic["last_seq"] for topic in httpx.get(a + "/topics", timeout=30).json())
    # New events through one aggregator at a capped rate, with retries enough to outlast the
    # restart; its verification spans it: every key of a batch answered 200 stored exactly once.
    load = pg.start(
        *("run", "--rm", "-T", "--no-deps", "-e", "SIMULATOR_URL=http://aggregator-pg-a:8080"),
        *("-e", f"SIMULATOR_SEED={LOAD_SEED}", "-e", "SIMULATOR_JSON=true"),
        *("-e", "SIMULATOR_EVENTS=30000", "-e", "SIMULATOR_RATE=2500"),
        *("-e", "SIMULATOR_RETRIES=40", "simulator"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Stopped early in a 12 s run, once its events commit by the aggregator's own account
        # (a loaded machine delays that account: the margin is for it).
        committed_after(a, newest, count=1000)
        assert load.poll() is None, "the run ended before PostgreSQL was stopped"
        postgres = pg.container("postgres")
        began = time.monotonic()
        pg.compose("stop", "postgres")
        figures["docker-compose stop postgres (two aggregators connected)"] = (
            f"{time.monotonic() - began:.1f} s"
        )
        # A fast shutdown ends the aggregators' sessions and exits 0; a smart one (SIGTERM)
        # waits for them until the engine SIGKILLs the server (137) and it starts in recovery.
        assert pg.engine.inspect(postgres, "{{.State.ExitCode}}") == "0", pg.logs("postgres")
        pg.compose("start", "postgres")
        pg.wait_healthy("postgres")
        stdout, stderr = load.communicate(timeout=300)
    finally:
        if load.poll() is None:
            load.kill()
    assert load.returncode == 0, stdout.decode() + stderr.decode()
    report = json.loads(stdout)
    assert report["retries"] > 0, f"the restart did not interrupt the run: {report}"
    # The other aggregator reconnects too: it acknowledges a new event (503s, "retry later",
    # until its writer has a connection again), which the first one then serves.
    assert publish_until_acknowledged(b, event(topic="after-restart"), timeout=60) == 200
    assert [e["event_id"] for e in every_event(a, "after-restart")] == ["e1"]
    stats_a, stats_b = (httpx.get(url + "/stats", timeout=30).json() for url in (a, b))
    del stats_a["uptime"], stats_b["uptime"]
    assert stats_a == stats_b
    assert stats_a["unique_processed"] == before["unique_processed"] + report["distinct_keys"] + 1


def publish_until_acknowledged(url: str, body: dict[str, Any], timeout: float) -> int:
    """POST until an answer other than 503 (polling with a deadline); that answer's status."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(url + "/publish", json=body, timeout=30)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response.status_code
        time.sleep(float(response.headers.get("Retry-After", "1")))  # sleep-ok: as Retry-After asks


def test_down_v_leaves_no_volume(pg: Project) -> None:
    pg.down()
    assert pg.containers() == []
    assert pg.volumes() == []
