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
    """A ``python -m …`` child; its stderr is drained by a thread so the pipe never fills."""

    def __init__(self, module: str, args: Sequence[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            env=env,
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
        self._ready.set()

    def wait_ready(self) -> str:
        if not self._ready.wait(START_TIMEOUT) or not self.url:
            raise RuntimeError("child did not start:\n" + "".join(self.lines))
        return self.url

    def peak_rss_mib(self) -> float:
        """VmHWM: the resident set's high-water mark so far."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._reader.join(30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@contextmanager
def running(module: str, args: Sequence[str], cwd: Path) -> Iterator[Child]:
    child = Child(module, args, cwd)
    try:
        child.wait_ready()
        yield child
    finally:
        child.stop()
