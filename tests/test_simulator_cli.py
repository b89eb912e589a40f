"""End to end: ``python -m simulator --preset uts`` against a real server subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, running_server


def simulate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", "--url", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_preset_uts_against_a_real_server(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        done = simulate(server.url, "--preset", "uts", "--seed", "11", "--json")
        assert done.returncode == 0, done.stdout + done.stderr + server.log()
        report = json.loads(done.stdout)
        assert report["ok"] is True
        assert report["events_sent"] == 5_000 and report["distinct_keys"] == 4_000
        assert report["acked_stored"] == 4_000 and report["acked_duplicates"] == 1_000
        # The same seed again: its keys are already stored, so verification must fail (exit 1).
        again = simulate(server.url, "--preset", "uts", "--seed", "11")
        assert again.returncode == 1, again.stdout + again.stderr
        assert "FAILED" in again.stdout


def test_bad_option_exits_2() -> None:
    done = simulate("http://127.0.0.1:9", "--dup-ratio", "1.5")
    assert done.returncode == 2
    assert "--dup-ratio" in done.stderr
