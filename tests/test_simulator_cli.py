"""End to end: ``python -m simulator --preset uts`` against a real server subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, running_server, wait_for


def simulate(
    url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", "--url", url, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
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


def test_a_url_without_its_scheme_exits_2_in_one_line() -> None:
    done = simulate("127.0.0.1:8080")  # it used to be tried, and fail as "is it running?"
    assert done.returncode == 2
    assert done.stderr == (
        "aggregator-sim: error: --url must be an http:// or https:// URL, such as "
        "http://127.0.0.1:8080; got '127.0.0.1:8080'\n"
    )


def test_an_unreachable_aggregator_is_one_line_and_exit_2() -> None:
    with socket.socket() as closed:  # a port nobody listens on: bound, never listening
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        done = simulate(url, "--events", "10", env={"COLUMNS": "60"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr  # not wrapped at the terminal's width
    assert done.stderr.startswith(f"aggregator-sim: cannot read {url}/stats: ConnectError(")
    assert done.stderr.rstrip().endswith("is it running?")


PUBLISH_TOKEN = "pub-7f3a9c"
READ_TOKEN = "read-51be02"
TOKENS = {"AGGREGATOR_PUBLISH_TOKEN": PUBLISH_TOKEN, "AGGREGATOR_READ_TOKEN": READ_TOKEN}


@pytest.mark.slow
def test_tokens_against_a_server_that_requires_them(tmp_path: Path) -> None:
    small = ("--events", "300", "--batch", "50", "--concurrency", "2", "--json")
    with running_server(tmp_path, env=TOKENS) as server:
        # httpx, tokens as flags.
        done = simulate(server.url, *small, "--token", PUBLISH_TOKEN, "--read-token", READ_TOKEN)
        assert done.returncode == 0, done.stdout + done.stderr + server.log()
        assert json.loads(done.stdout)["ok"] is True
        # The raw client, tokens from the environment.
        env = {"SIMULATOR_TOKEN": PUBLISH_TOKEN, "SIMULATOR_READ_TOKEN": READ_TOKEN}
        done = simulate(server.url, *small, "--http", "raw", env=env)
        assert done.returncode == 0, done.stdout + done.stderr + server.log()
        assert json.loads(done.stdout)["ok"] is True

        # No read token: /stats is refused before anything is sent.
        no_read = simulate(server.url, *small, "--token", PUBLISH_TOKEN)
        assert no_read.returncode == 2, no_read.stdout + no_read.stderr
        assert "/stats answered 401" in no_read.stderr
        assert "--read-token / SIMULATOR_READ_TOKEN" in no_read.stderr
        # No publish token, either client: the first 401 stops the run; nothing is retried.
        for client in ("httpx", "raw"):
            refused = simulate(server.url, *small, "--http", client, "--read-token", READ_TOKEN)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert "/publish answered 401" in refused.stderr
            assert "--token / SIMULATOR_TOKEN" in refused.stderr
            assert "retries" not in refused.stderr
        # A wrong token is refused the same way, and no token is ever printed.
        wrong = simulate(server.url, *small, "--token", "nope-0", "--read-token", READ_TOKEN)
        assert wrong.returncode == 2 and "token for /publish is wrong" in wrong.stderr
        for run in (done, no_read, refused, wrong):
            output = run.stdout + run.stderr
            assert PUBLISH_TOKEN not in output and READ_TOKEN not in output
            assert "nope-0" not in output


def test_an_interrupted_run_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """Ctrl-C (or a container's stop signal, SIGINT) is not a failed check (exit 1)."""
    argv = [sys.executable, "-m", "simulator", "--events", "0", "--duration", "120", "--seed", "5"]
    with (
        running_server(tmp_path) as server,
        httpx.Client(base_url=server.url) as http,
        subprocess.Popen(
            [*argv, "--url", server.url, "--json"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ) as proc,
    ):  # fmt: skip
        wait_for(lambda: http.get("/stats").json()["received"] > 0, "the simulator sending")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "aggregator-sim: interrupted (seed 5); nothing was verified\n"
    assert out == ""
