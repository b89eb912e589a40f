"""The postgres profile with real containers: PostgreSQL and two aggregators sharing it agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.containers.engine import Engine, Project, project

SEED = "20261123"
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


def test_down_v_leaves_no_volume(pg: Project) -> None:
    pg.down()
    assert pg.containers() == []
    assert pg.volumes() == []
