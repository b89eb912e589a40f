"""Damage in the WAL that SQLite's recovery hides.

Recovery after a crash reads the WAL's frames while their checksums chain, and stops at the first
that does not: past it, everything is taken for a torn, never-acknowledged tail and ignored.
One flipped byte in the middle of a WAL (a failing disk, a stray write) so drops every
transaction after it without a word, and worse: the frames before it are older versions of
pages the checkpointer had already copied into the file, so the store reads a mix of old and new
pages (seen here: counters at 950 events over 993 rows after 1,000 were acknowledged) that
``PRAGMA quick_check`` passes, and the next checkpoint writes that mix into the file.

A torn tail is told apart from damage by the WAL's salts: every frame written since the WAL last
started over carries the salts of its header. A frame past the recovered end with those salts
that commits a transaction (``nTruncate`` set) and is followed by more such frames was synced
before later writes (``synchronous = FULL`` syncs at every commit), so it was acknowledged: the
WAL is damaged. Only the frame headers are read (24 bytes each); the recovered end comes from
the wal-index header in the ``-shm`` (both formats are SQLite's documented file formats).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

WAL_HEADER = 32
FRAME_HEADER = 24
WAL_MAGIC = (0x377F0682, 0x377F0683)


def dropped_commits(path: Path) -> tuple[int, int] | None:
    """After a connection has opened ``path`` (so the ``-shm`` holds the recovered end): the
    frame recovery stopped before and how many acknowledged commits lie past it; None when the
    WAL ends where recovery ended, or cannot be read as SQLite writes it."""
    real = Path(os.path.realpath(path))
    try:
        with open(real.with_name(real.name + "-wal"), "rb") as wal:
            header = wal.read(WAL_HEADER)
            if len(header) < WAL_HEADER:
                return None
            magic, _, page_size, _, salt1, salt2 = struct.unpack(">6I", header[:24])
            shm = real.with_name(real.name + "-shm").read_bytes()[:48]
            if magic not in WAL_MAGIC or len(shm) < 48 or not shm[12]:  # isInit
                return None
            (recovered,) = struct.unpack("=I", shm[16:20])  # mxFrame, native order
            if shm[32:40] != header[16:24]:  # the wal-index is of another WAL generation
                return None
            frame = recovered + 1
            commits, last_same, seen = [], 0, 0
            while True:
                wal.seek(WAL_HEADER + (frame - 1) * (FRAME_HEADER + page_size))
                head = wal.read(FRAME_HEADER)
                if len(head) < FRAME_HEADER:
                    break
                _, truncate, s1, s2 = struct.unpack(">4I", head[:16])
                if (s1, s2) == (salt1, salt2):
                    seen += 1
                    last_same = frame
                    if truncate:
                        commits.append(frame)
                frame += 1
    except FileNotFoundError:
        return None
    acknowledged = [c for c in commits if c < last_same]
    if not acknowledged:
        return None
    return recovered + 1, len(acknowledged)
