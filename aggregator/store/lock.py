"""One server per SQLite store: an exclusive ``flock`` on the database file while it is open.

Two servers writing one SQLite file would each answer for data the other committed, and their
writers would time out on each other's locks (PostgreSQL's ``postmaster.pid`` prevents the same
for its data directory). ``flock`` is independent of the POSIX record locks SQLite itself takes,
leaves the file untouched, and is released by the kernel when the process ends, however it ends:
a SIGKILLed server leaves no stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from aggregator.store.base import StoreUnavailable


class StoreLock:
    """Holds the store file locked until ``release``."""

    def __init__(self, store: Path) -> None:
        fd = os.open(store, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreUnavailable(
                f"{store} is in use by another aggregator; stop it, or give this one another "
                f"--data-dir (`fuser {store}` shows its pid)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
