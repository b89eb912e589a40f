"""Helpers shared by the test suites: a real server subprocess, event factories."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (http://[\d.]+:(\d+))")


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


class ServerProcess:
    """``python -m aggregator`` on port 0; ``url`` is known once it logs that it listens.

    stderr is drained by a thread into ``lines`` (so the pipe never fills under load), and the
    thread sets an event when the listening line shows up: start-up is waited for, not slept on.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        *,
        inherit_env: bool = True,
    ) -> None:
        """``inherit_env=False`` runs with ``env`` alone, as a container's process sees only its
        image's and its service's environment."""
        if inherit_env:
            full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
            full_env.setdefault("PYTHONPATH", str(ROOT))
        else:
            full_env = dict(env or {})
        argv = list(command) if command else [sys.executable, "-m", "aggregator"]
        self.proc = subprocess.Popen(
            [*argv, *args],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.url = ""
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            match = LISTENING.search(line)
            if match and not self.url:
                self.url = match.group(1)
                self._ready.set()
        self.proc.stderr.close()
        self._ready.set()  # exited: wait_ready returns and reports it

    def wait_ready(self, timeout: float = 30) -> str:
        if not self._ready.wait(timeout) or not self.url:
            self.kill()
            raise RuntimeError("server did not start:\n" + self.log())
        return self.url

    def log(self) -> str:
        return "".join(self.lines)

    def terminate(self, timeout: float = 30, signum: int = signal.SIGTERM) -> int:
        """SIGTERM (or ``signum``), then the exit code."""
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to drain or close anything."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(30)


@contextmanager
def running_server(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A started server on ``data_dir``; SIGKILLed on the way out if it is still running."""
    server = ServerProcess(["--port", "0", "--data-dir", str(data_dir), *args], env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()
