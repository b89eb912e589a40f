"""A program on a pseudo-terminal, its screen read through a terminal emulator (pyte)."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable

import pyte


class Terminal:
    """``argv`` on a fresh pseudo-terminal of ``columns`` × ``lines``; ``screen`` is what a person
    would see on it."""

    def __init__(
        self, start: Callable[..., subprocess.Popen[bytes]], columns: int = 120, lines: int = 40
    ) -> None:
        self.screen = pyte.Screen(columns, lines)
        self._stream = pyte.ByteStream(self.screen)
        self._master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        try:
            self.process = start(stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        finally:
            os.close(slave)

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, shown: Callable[[str], bool], timeout: float) -> str:
        """Read the program's output until ``shown(text)``; the screen then, or AssertionError
        with the screen at the deadline."""
        deadline = time.monotonic() + timeout
        while not shown(self.text):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                raise AssertionError(f"not shown within {timeout} s; the screen:\n{self.text}")
        return self.text

    def type(self, keys: bytes) -> None:
        os.write(self._master, keys)

    def wait_exit(self, timeout: float) -> int:
        """Keeps reading (a full pseudo-terminal would block the program) until it exits."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"still running after {timeout} s; the screen:\n{self.text}")
            if not self._read(remaining):
                return self.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self._master)

    def _read(self, timeout: float) -> bool:
        """False once the program's side of the terminal is closed, or at the deadline."""
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: every process on the other side has closed it
            return False
        self._stream.feed(chunk)
        return bool(chunk)
