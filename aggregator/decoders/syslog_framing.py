"""RFC 6587 framing of a syslog TCP stream, detected per message; sans I/O (bytes in, frames out).

A frame that starts with a digit is octet-counted (``MSG-LEN SP MSG``, RFC 6587 3.4.1); any
other is newline-delimited (3.4.2). Senders differ (docs/syslog.md): util-linux ``logger
--octet-count`` counts the message alone, rsyslog's ``omfwd`` counts a trailing LF as well, so
one LF (or NUL) at the end of a frame is dropped, and a CR before it: the same message framed
either way (or sent over UDP, ``strip_frame``) is the same bytes, and so the same event. Empty
lines and NULs between frames are skipped. A newline-delimited frame ends at its LF or at a NUL,
the other TRAILER RFC 6587 3.4.2 names (some senders end each message with a NUL and no LF):
NUL is not text, so a NUL inside an octet-counted frame or a datagram is kept as U+0000.

Memory is bounded by ``max_bytes``: a frame longer than that is never buffered; its bytes are
skipped as they arrive (up to its LF, or its count) and reported once as ``TOO_LARGE``.
"""

from __future__ import annotations

import enum

MAX_COUNT_DIGITS = 9  # an octet count below 10^9; a longer run of digits is not a count
_DIGITS = b"0123456789"
_BETWEEN = b"\n\r\x00"  # what may separate frames


class Problem(enum.Enum):
    """A frame that cannot be delivered, reported in place of it."""

    TOO_LARGE = "too_large"  # over the limit: skipped without being buffered
    TRUNCATED = "truncated"  # the stream ended (or was cut) inside it


def strip_frame(frame: bytes) -> bytes:
    """A message without one trailing LF or NUL (and a CR before it): the bytes that are
    hashed."""
    if frame.endswith((b"\n", b"\x00")):
        frame = frame[:-1]
    if frame.endswith(b"\r"):
        frame = frame[:-1]
    return frame


class Framer:
    """Feed it the stream's bytes as they arrive; it returns the complete frames."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._buffer = bytearray()
        self._skip_count = 0  # bytes of an oversized octet-counted frame still to discard
        self._skip_line = False  # discarding an oversized line up to its LF
        # Bytes of the line begun at the buffer's start already searched for its end: a line
        # arriving a byte at a time is scanned once, not once per byte (quadratic: 0.26 s of
        # CPU for one 64 KiB line sent a byte at a time).
        self._scanned = 0
        self.truncated = False  # the stream ended or was cut inside a frame

    @property
    def partial(self) -> bool:
        """Inside a frame: some of it has arrived, not all."""
        return bool(self._buffer) or self._skip_count > 0 or self._skip_line

    def feed(self, data: bytes) -> list[bytes | Problem]:
        buffer = self._buffer
        buffer += data
        out: list[bytes | Problem] = []
        pos, end = 0, len(buffer)
        while pos < end:
            if self._skip_count:
                taken = min(self._skip_count, end - pos)
                self._skip_count -= taken
                pos += taken
                continue
            if self._skip_line:
                newline = _trailer(buffer, pos, end)
                if newline < 0:
                    pos = end
                    break
                self._skip_line, pos = False, newline + 1
                continue
            if buffer[pos] in _BETWEEN:
                pos += 1
                continue
            count, start = _octet_count(buffer, pos, end)
            if count == -1:  # digits so far: wait for the space that makes them a count
                break
            if count is not None:
                if count > self._max:
                    out.append(Problem.TOO_LARGE)
                    self._skip_count, pos = count, start
                    continue
                if end - start < count:
                    break
                out.append(strip_frame(bytes(buffer[start : start + count])))
                pos = start + count
                continue
            newline = _trailer(buffer, pos + self._scanned if pos == 0 else pos, end)
            self._scanned = 0
            if newline < 0:
                if end - pos > self._max:
                    out.append(Problem.TOO_LARGE)
                    self._skip_line, pos = True, end
                else:
                    self._scanned = end - pos
                break
            if newline - pos > self._max:
                out.append(Problem.TOO_LARGE)
            else:
                out.append(strip_frame(bytes(buffer[pos:newline])))
            pos = newline + 1
        del buffer[:pos]
        return out

    def end(self) -> list[bytes | Problem]:
        """At the end of the stream: a last line without its LF is a frame; an octet-counted
        frame that did not arrive whole is ``TRUNCATED``."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        skipping = self._skip_count or self._skip_line
        self._skip_count, self._skip_line = 0, False
        if skipping or not rest:
            return []  # an oversized frame was reported when it started
        count, _ = _octet_count(rest, 0, len(rest))
        if count is not None and count >= 0:
            self.truncated = True
            return [Problem.TRUNCATED]
        return [strip_frame(rest)]

    def cut(self) -> list[Problem]:
        """The stream is cut (a stall, shutdown): a frame begun is ``TRUNCATED``."""
        begun = bool(self._buffer) and not (self._skip_count or self._skip_line)
        self._buffer.clear()
        self._scanned = 0
        self.truncated = self.truncated or begun
        self._skip_count, self._skip_line = 0, False
        return [Problem.TRUNCATED] if begun else []


def _trailer(buffer: bytearray, pos: int, end: int) -> int:
    """Where the line that starts at ``pos`` ends: its LF or a NUL before it; -1 for neither.
    The NUL is looked for only up to the LF, so a buffer of many lines is scanned once."""
    newline = buffer.find(b"\n", pos, end)
    nul = buffer.find(b"\x00", pos, end if newline < 0 else newline)
    return newline if nul < 0 else nul


def _octet_count(buffer: bytes | bytearray, pos: int, end: int) -> tuple[int | None, int]:
    """``(count, where the frame starts)`` when ``buffer[pos:]`` starts with ``MSG-LEN SP``;
    ``(-1, pos)`` when it holds only digits so far; ``(None, pos)`` when it is not a count."""
    digit = pos
    while digit < end and digit - pos <= MAX_COUNT_DIGITS and buffer[digit] in _DIGITS:
        digit += 1
    if digit == pos or digit - pos > MAX_COUNT_DIGITS or buffer[pos] == 0x30:  # none, long, "0…"
        return None, pos
    if digit == end:
        return -1, pos
    if buffer[digit] != 0x20:
        return None, pos
    return int(buffer[pos:digit]), digit + 1
