"""A size limit on a real server process, with the kernel's per-file size limit (RLIMIT_FSIZE,
set from outside with ``prlimit``, as in ``test_faults.py``) standing for the disk: under
sustained load the store stays within its limit plus one checkpoint's worth of WAL, so it never
fills the disk it was given room on."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator.store.sqlite import wal_restart_pages
from tests.support import event, running_server
from tests.test_faults import file_sizes

pytestmark = pytest.mark.sqlite_only
PAYLOAD = {"text": "x" * 2000}  # ~100 KB per request of 50


def batch(prefix: str, i: int) -> list[dict[str, Any]]:
    return [event("a", f"{prefix}-{i}-{j}", payload=PAYLOAD) for j in range(50)]


def expired(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("aggregator_events_expired_total "):
            return float(line.split()[1])
    raise AssertionError("no aggregator_events_expired_total in /metrics")


def test_under_sustained_load_a_size_limit_holds_the_files_within_it(tmp_path: Path) -> None:
    limit = 2_000_000
    wal = 2 * wal_restart_pages(limit) * 4096  # one checkpoint's worth, at the most
    with (
        running_server(tmp_path, "--retention-bytes", str(limit)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        # Any file growing past limit + one checkpoint + one transaction fails with EFBIG: a 503.
        ceiling = limit + wal + 512 * 1024
        hard = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (ceiling, hard))
        for i in range(80):  # ~8 MB: four times the limit
            response = http.post("/publish", json=batch("load", i))
            assert response.status_code == 200, (i, response.text)
        assert expired(http) > 2000
        stats = http.get("/stats").json()
    assert stats["unique_processed"] == 4000
    assert file_sizes(tmp_path) <= ceiling
