"""Helpers shared by the test suites: a real server subprocess, event factories."""

from __future__ import annotations

import os
import re
import select
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simulator.procs import Child

ROOT = Path(__file__).resolve().parent.parent


def event(topic: str = "t", event_id: str = "e1", **extra: Any) -> dict[str, Any]:
    """A valid event; keyword arguments override or add fields."""
    body: dict[str, Any] = {
        "topic": topic,
        "event_id": event_id,
        "timestamp": "2026-11-21T10:00:00Z",
        "source": "tests",
        "payload": {"n": 1},
    }
    body.update(extra)
    return body


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # sleep-ok: polls a real subprocess with a deadline


READ_PROCESS = re.compile(r"reads are answered by the read process \(pid (\d+)\)")


def read_pid(server: ServerProcess) -> int:
    """The pid of ``server``'s read process, once it is ready."""
    wait_for(lambda: READ_PROCESS.search(server.log()), "the read process")
    match = READ_PROCESS.search(server.log())
    assert match is not None
    return int(match.group(1))


def wait_exit(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` (not a child of this one) ended within ``timeout`` seconds."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([handle], [], [], timeout)[0])
    finally:
        os.close(handle)


class ServerProcess(Child):
    """``python -m aggregator`` (or ``command``) in the repository, with ``args``; ``url`` is
    known once it logs that it listens."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        *,
        inherit_env: bool = True,
    ) -> None:
        super().__init__(
            "aggregator", args, ROOT, env=env, command=command, inherit_env=inherit_env
        )

    def wait_ready(self, timeout: float = 30) -> str:
        try:
            return super().wait_ready(timeout)
        except RuntimeError:
            raise RuntimeError("server did not start:\n" + self.log()) from None


def server_under_file_limit(
    data_dir: Path, nofile: int, env: dict[str, str] | None = None
) -> ServerProcess:
    """``python -m aggregator`` on ``data_dir`` under ``prlimit --nofile=nofile``, not yet
    waited for (``wait_ready``)."""
    return ServerProcess(
        ["--port", "0", "--data-dir", str(data_dir)],
        env=env,
        command=["prlimit", f"--nofile={nofile}", sys.executable, "-m", "aggregator"],
    )


@contextmanager
def running_server(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, launcher: str | None = None
) -> Iterator[ServerProcess]:
    """A started server on ``data_dir``; SIGKILLed on the way out if it is still running.
    ``launcher``: Python source run with ``-c`` instead of ``-m aggregator`` (a test's patched
    server, which ends by calling ``aggregator.__main__.main``)."""
    command = [sys.executable, "-c", launcher] if launcher is not None else None
    server = ServerProcess(
        ["--port", "0", "--data-dir", str(data_dir), *args], env=env, command=command
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()
