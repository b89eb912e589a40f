"""Child processes of the benchmark: start one, learn its URL from its log, read its peak RSS."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

LISTENING = re.compile(r"listening on (http://[\d.]+:\d+)")
START_TIMEOUT = 30.0


class Child:
    """A ``python -m MODULE`` child (or ``command``); its stderr is drained by a thread into
    ``lines`` so the pipe never fills, and the thread notes the URL once the child logs that it
    listens: start-up is waited for, not slept on. ``inherit_env=False`` runs it with ``env``
    alone, as a container's process sees only its image's and its service's environment."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        cwd: Path,
        *,
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        inherit_env: bool = True,
    ) -> None:
        if inherit_env:
            full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
            full_env.setdefault("PYTHONPATH", str(cwd))
        else:
            full_env = dict(env or {})
        argv = list(command) if command else [sys.executable, "-m", module]
        self.proc = subprocess.Popen(
            [*argv, *args],
            cwd=cwd,
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

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str:
        if not self._ready.wait(timeout) or not self.url:
            self.kill()
            raise RuntimeError("child did not start:\n" + self.log())
        return self.url

    def log(self) -> str:
        return "".join(self.lines)

    def peak_rss_mib(self) -> float:
        """VmHWM: the resident set's high-water mark so far."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

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

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(30)


@contextmanager
def running(module: str, args: Sequence[str], cwd: Path) -> Iterator[Child]:
    child = Child(module, args, cwd)
    try:
        child.wait_ready()
        yield child
    finally:
        child.stop()
