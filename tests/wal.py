"""Count the transactions SQLite really committed, from the outside: the WAL file's commit frames.

Every COMMIT in WAL mode appends the transaction's pages to ``<db>-wal``; the last frame of each
transaction is a commit frame (its header holds the database size after the commit, non-zero).
Frames whose salts differ from the header's are left over from before the WAL was last reset.
This is what reaches the disk (one fsync per commit frame under ``synchronous=FULL``), so a
test that counts them sees the store's real transactions, not what the writer believes it did.
Format: https://www.sqlite.org/fileformat.html#the_write_ahead_log
"""

from __future__ import annotations

import struct
from pathlib import Path

HEADER = 32
FRAME_HEADER = 24
MAGIC = (0x377F0682, 0x377F0683)


def wal_commits(db: Path) -> tuple[int, int]:
    """``(salt, commits)``: the WAL's current salt (it changes when the WAL is reset) and how
    many transactions it holds since that reset."""
    wal = db.with_name(db.name + "-wal")
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < HEADER:
        return 0, 0
    magic, _version, page_size, _checkpoint, salt1, salt2 = struct.unpack(">6I", data[:24])
    assert magic in MAGIC, f"{wal} is not a WAL file"
    commits = 0
    frame = FRAME_HEADER + page_size
    for offset in range(HEADER, len(data) - frame + 1, frame):
        _page, size_after_commit, s1, s2 = struct.unpack_from(">4I", data, offset)
        if (s1, s2) != (salt1, salt2):
            break  # the rest was written before the last reset
        commits += size_after_commit != 0
    return salt1 << 32 | salt2, commits


class TransactionCounter:
    """Transactions committed to ``db`` since the counter was made (the WAL must not be reset
    in between: a checkpoint that restarts it fails the count loudly instead of lying)."""

    def __init__(self, db: Path) -> None:
        self._db = db
        self._salt, self._start = wal_commits(db)

    def count(self) -> int:
        salt, commits = wal_commits(self._db)
        assert salt == self._salt, "the WAL was reset (checkpointed) while counting"
        return commits - self._start


def current_frames(wal: bytes) -> list[tuple[int, bool]]:
    """The frames written since the WAL last started over (its header's salts), in order:
    (offset, commits a transaction)."""
    page_size = int.from_bytes(wal[8:12], "big")
    frames, offset = [], 32
    while offset + 24 + page_size <= len(wal):
        if wal[offset + 8 : offset + 16] == wal[16:24]:
            frames.append((offset, int.from_bytes(wal[offset + 4 : offset + 8], "big") > 0))
        offset += 24 + page_size
    return frames
