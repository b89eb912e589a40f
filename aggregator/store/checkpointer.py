"""WAL checkpoints on a thread of their own, off the writer's path.

The writer's connection has ``wal_autocheckpoint = 0``: it never copies WAL pages back into the
database itself, which with random keys is as much I/O as the commit (one page per new key).
This thread does PASSIVE checkpoints on its own connection after commits instead; they never
block the writer or the readers. A WAL that is always being appended to is never completely
checkpointed, and so never restarts from its beginning: once it holds ``restart_frames``, one
more pass runs while holding ``pause`` (the writer holds it around each transaction), which
copies only what the previous pass missed, and the writer's next transaction then starts the
WAL over. So the WAL stays near ``restart_frames`` pages plus one transaction.

A checkpoint that finds the file damaged (SQLITE_CORRUPT, SQLITE_NOTADB) stops this thread; the
writer's next transaction or upkeep step raises it (``raise_damage``), which stops the server.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from aggregator.store.base import StoreDamaged
from aggregator.store.sqlite_reader import damaged, is_damage

LOGGER = logging.getLogger(__name__)


class Checkpointer:
    """Owns one connection and one thread; ``notify`` after a commit, ``close`` at the end."""

    def __init__(
        self, path: Path, *, synchronous: str, restart_frames: int, idle_seconds: float = 1.0
    ) -> None:
        self.pause = threading.Lock()
        self.passes = 0
        self.restarts = 0
        self._restart_frames = restart_frames
        self._idle_seconds = idle_seconds
        self._wake = threading.Event()
        self._stopping = False
        self._path = path
        self._damage: StoreDamaged | None = None
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Something was committed; never blocks."""
        self._wake.set()

    def _checkpoint(self) -> tuple[int, int]:
        _, log, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.passes += 1
        return log, done

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._idle_seconds)
            self._wake.clear()
            if self._stopping:
                break
            try:
                log, _ = self._checkpoint()
                if log >= self._restart_frames:
                    with self.pause:
                        self._checkpoint()
                    self.restarts += 1
            except sqlite3.Error as exc:
                if is_damage(exc):
                    self._damage = damaged(exc, self._path)
                    LOGGER.critical("checkpoint failed: %s", self._damage)
                    return
                LOGGER.warning("checkpoint failed: %s", exc)  # e.g. disk full: try again next

    def raise_damage(self) -> None:
        """Raise the ``StoreDamaged`` a checkpoint met, if one did."""
        if self._damage is not None:
            raise self._damage

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._conn.close()
